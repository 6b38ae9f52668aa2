"""The platform checks of a diagnosis (issue 23's doctor, in progress) against the fake
upstream over real sockets: each fault named, with its fix."""

from __future__ import annotations

import asyncio
import uuid

from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.diagnosis import Check, check_platform
from tests.fakes.rpa_upstream import CREATE_PATH, QUERY_PATH, FakeUpstream, managed_contract


def diagnose(create_url: str, query_url: str, token: str) -> dict[str, Check]:
    async def main() -> list[Check]:
        backend = AstronBackend(create_url=create_url, query_url=query_url)
        try:
            return await check_platform(backend, token)
        finally:
            await backend.aclose()

    return {check.name: check for check in asyncio.run(main())}


def key() -> str:
    return f"doctor-{uuid.uuid4().hex[:8]}"


def test_a_healthy_legacy_platform_passes_every_check(fake: FakeUpstream) -> None:
    checks = diagnose(fake.base_url + CREATE_PATH, fake.base_url + QUERY_PATH, key())
    assert all(c.ok for c in checks.values()), checks
    assert set(checks) == {
        "platform reachable",
        "create route",
        "query route",
        "key accepted",
        "clock",
        "contract",
    }
    assert "legacy routes" in checks["contract"].detail


def test_wrong_paths_are_named_with_the_setting_to_fix(fake: FakeUpstream) -> None:
    checks = diagnose(fake.base_url + "/api/workflows/run", fake.base_url + "/api/exec", key())
    assert not checks["create route"].ok and "path is wrong" in checks["create route"].detail
    assert "XIAOWU_RPA_TASK_CREATE_URL" in checks["create route"].fix
    assert not checks["query route"].ok and "XIAOWU_RPA_TASK_QUERY_URL" in checks["query route"].fix


def test_a_rejected_key_is_named(fake: FakeUpstream) -> None:
    wrong = key()
    fake.rejected.add(wrong)
    checks = diagnose(fake.base_url + CREATE_PATH, fake.base_url + QUERY_PATH, wrong)
    assert not checks["key accepted"].ok and "rejected the key" in checks["key accepted"].detail
    assert wrong not in " ".join(c.detail + c.fix for c in checks.values())


def test_an_offline_client_on_a_managed_platform_is_named(fake: FakeUpstream) -> None:
    caller = key()
    fake.offer_contract(caller, managed_contract(client={"state": "offline", "protocol": None}))
    checks = diagnose(fake.base_url + CREATE_PATH, fake.base_url + QUERY_PATH, caller)
    assert checks["contract"].ok and "managed contract 1" in checks["contract"].detail
    client = checks["RPA client"]
    assert not client.ok and "offline" in client.detail and "start the RPA client" in client.fix


def test_an_unreachable_host_and_an_unknown_name_are_named() -> None:
    closed = diagnose("http://127.0.0.1:9" + CREATE_PATH, "http://127.0.0.1:9" + QUERY_PATH, key())
    assert list(closed) == ["platform reachable"]
    assert (
        not closed["platform reachable"].ok
        and "cannot connect" in closed["platform reachable"].detail
    )
    unknown = diagnose("http://no-such-host.invalid/x", "http://no-such-host.invalid/y", key())
    assert "does not resolve" in unknown["platform reachable"].detail
