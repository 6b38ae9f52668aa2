"""Which dialect the RPA platform speaks for a caller (the managed contract's discovery,
issue 23's first step): the backend asks the fake upstream's discovery route over a real
socket; each test uses keys of its own, so the session's fake counts only its asks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.backends.contract import ClientState, ContractMode, ContractProbe, Dialect
from tests.fakes.rpa_upstream import CREATE_PATH, QUERY_PATH, FakeUpstream, managed_contract

T = TypeVar("T")


def key() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def probing(
    fake: FakeUpstream,
    scenario: Callable[[ContractProbe, Clock], Awaitable[T]],
    mode: ContractMode = "auto",
) -> T:
    async def main() -> T:
        backend = AstronBackend(
            create_url=fake.base_url + CREATE_PATH, query_url=fake.base_url + QUERY_PATH
        )
        clock = Clock()
        try:
            return await scenario(
                ContractProbe(backend.fetch_integration, mode, clock=clock), clock
            )
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_an_older_build_is_legacy_and_asked_again_only_after_ten_minutes(
    fake: FakeUpstream,
) -> None:
    caller = key()  # the fake answers 404 to keys it was not told about, as older builds do

    async def scenario(probe: ContractProbe, clock: Clock) -> list[Any]:
        first = await probe.discover(caller)
        clock.now += 599
        cached = await probe.discover(caller)
        asked = fake.discoveries[caller]
        clock.now += 2
        await probe.discover(caller)
        return [first, cached, asked, fake.discoveries[caller]]

    first, cached, asked, later = probing(fake, scenario)
    assert first.dialect is Dialect.LEGACY and "404" in first.reason
    assert cached == first and (asked, later) == (1, 2)


def test_a_managed_build_with_the_client_ready_is_managed_for_thirty_seconds(
    fake: FakeUpstream,
) -> None:
    caller = key()
    fake.offer_contract(caller)

    async def scenario(probe: ContractProbe, clock: Clock) -> list[Any]:
        found = await probe.discover(caller)
        clock.now += 29
        await probe.discover(caller)
        asked = fake.discoveries[caller]
        clock.now += 2
        await probe.discover(caller)
        return [found, asked, fake.discoveries[caller]]

    found, asked, later = probing(fake, scenario)
    assert found.dialect is Dialect.MANAGED and found.client_state is ClientState.READY
    assert found.supports_cancel and found.service_version.startswith("1.0.0")
    assert found.json_limits is not None and found.json_limits.max_depth == 12
    assert (asked, later) == (1, 2)


def test_an_offline_client_is_asked_about_again_after_five_seconds(fake: FakeUpstream) -> None:
    caller = key()
    fake.offer_contract(caller, managed_contract(client={"state": "offline", "protocol": None}))

    async def scenario(probe: ContractProbe, clock: Clock) -> list[Any]:
        found = await probe.discover(caller)
        clock.now += 4
        await probe.discover(caller)
        asked = fake.discoveries[caller]
        fake.offer_contract(caller)  # the client came online
        clock.now += 2
        return [found, asked, await probe.discover(caller)]

    found, asked, later = probing(fake, scenario)
    assert (found.dialect, found.client_state, asked) == (Dialect.MANAGED, ClientState.OFFLINE, 1)
    assert later.client_state is ClientState.READY


def test_a_contract_this_gateway_does_not_speak_is_legacy_naming_why(fake: FakeUpstream) -> None:
    offers = {
        "contract version 2 is not 1": managed_contract(contractVersion=2),
        "idempotency keys are not durable": managed_contract(durableIdempotency=False),
        "does not offer execution_cancel": managed_contract(
            operations=["workflow_execute", "execution_get"]
        ),
    }
    callers = {why: key() for why in offers}
    for why, offer in offers.items():
        fake.offer_contract(callers[why], offer)

    async def scenario(probe: ContractProbe, clock: Clock) -> dict[str, Any]:
        return {why: await probe.discover(caller) for why, caller in callers.items()}

    for why, found in probing(fake, scenario).items():
        assert found.dialect is Dialect.LEGACY and why in found.reason, found


def test_a_failed_probe_is_legacy_for_now_and_soon_asked_again(fake: FakeUpstream) -> None:
    """A refused key or a platform error says nothing of the contract: no managed field is
    sent on it, and the next ask comes after seconds, not ten minutes."""
    refused, failing = key(), key()
    fake.offer_contract(refused, status=401)
    fake.offer_contract(failing, status=503)

    async def scenario(probe: ContractProbe, clock: Clock) -> list[Any]:
        found = [await probe.discover(refused), await probe.discover(failing)]
        clock.now += 6
        await probe.discover(failing)
        return [*found, fake.discoveries[failing]]

    rejected, errored, asked = probing(fake, scenario)
    assert rejected.dialect is Dialect.LEGACY and "rejected the key" in rejected.reason
    assert errored.dialect is Dialect.LEGACY and "503" in errored.reason
    assert asked == 2


def test_forced_legacy_asks_nothing(fake: FakeUpstream) -> None:
    caller = key()
    fake.offer_contract(caller)

    async def scenario(probe: ContractProbe, clock: Clock) -> Any:
        return await probe.discover(caller)

    found = probing(fake, scenario, mode="legacy")
    assert found.dialect is Dialect.LEGACY and caller not in fake.discoveries


def test_an_unreachable_platform_is_legacy_for_now() -> None:
    async def main() -> Any:
        closed = "http://127.0.0.1:9"  # nothing listens on the discard port here
        backend = AstronBackend(create_url=closed + CREATE_PATH, query_url=closed + QUERY_PATH)
        try:
            return await ContractProbe(backend.fetch_integration).discover(key())
        finally:
            await backend.aclose()

    found = asyncio.run(main())
    assert found.dialect is Dialect.LEGACY and "cannot be reached" in found.reason, found


def test_a_create_url_of_another_shape_has_no_discovery_route() -> None:
    async def main() -> str:
        backend = AstronBackend(create_url="http://rpa/custom/create", query_url="http://rpa/q")
        try:
            return backend.discovery_url
        finally:
            await backend.aclose()

    assert asyncio.run(main()) == ""


def test_a_route_the_platform_does_not_serve_is_an_older_build(fake: FakeUpstream) -> None:
    caller = key()
    fake.offer_contract(caller, status=405)

    async def scenario(probe: ContractProbe, clock: Clock) -> list[Any]:
        found = await probe.discover(caller)
        clock.now += 599
        await probe.discover(caller)
        return [found, fake.discoveries[caller]]

    found, asked = probing(fake, scenario)
    assert found.dialect is Dialect.LEGACY and "405" in found.reason and asked == 1
