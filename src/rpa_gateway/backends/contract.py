"""Which dialect the RPA platform speaks for a caller: the managed execution contract, or
the legacy routes (see ``shared/reference/upstream-managed-executions.md``).

Newer astron-rpa builds answer ``GET {base}/workflows/integration`` with what they offer;
older ones have no such route (404).  The contract is accepted only with
``contractVersion`` 1, ``durableIdempotency`` true and the operations the gateway uses
listed: a managed field must never reach a platform that has not passed this probe
(older builds drop such fields silently, some newer ones refuse them with a 422).

The answer is kept per caller (the key decides the account, and so its desktop client):
``ready_ttl`` seconds when the account's client is ready, ``other_ttl`` otherwise (its
state changes as it comes online), ``legacy_ttl`` for a platform found without the
contract (upgrades are rare).  ``mode`` (``RPA_UPSTREAM_CONTRACT``) forces either
dialect without asking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from rpa_gateway.access import digest

CONTRACT_VERSION = 1
NEEDED_OPERATIONS = frozenset({"workflow_execute", "execution_get", "execution_cancel"})

ContractMode = Literal["auto", "managed", "legacy"]
# (HTTP status, the decoded JSON body or None) of GET {base}/workflows/integration.
FetchIntegration = Callable[[str], Awaitable[tuple[int, Any]]]


class Dialect(StrEnum):
    MANAGED = "managed"
    LEGACY = "legacy"


class ClientState(StrEnum):
    """The account's desktop RPA client, as the platform last probed it."""

    READY = "ready"
    OFFLINE = "offline"
    UNCONFIRMED = "unconfirmed"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_bytes: int
    max_depth: int
    max_object_properties: int
    max_array_items: int
    max_string_length: int


@dataclass(frozen=True, slots=True)
class Discovery:
    """What the probe found for one caller: the dialect to speak, and why."""

    dialect: Dialect
    reason: str
    service_version: str = ""
    client_state: ClientState | None = None
    supports_cancel: bool = False
    json_limits: JsonLimits | None = None


def read_integration(status: int, body: Any) -> tuple[Discovery, bool]:
    """The discovery a reply means, and whether it is definite (False: the probe failed
    and says nothing of the platform, such as a 5xx or a refused key)."""
    if status == 404:
        return Discovery(Dialect.LEGACY, "the platform has no managed contract (404)"), True
    if status == 401:
        return Discovery(Dialect.LEGACY, "the platform rejected the key (401)"), False
    if 400 <= status < 500 and status not in (408, 425, 429):
        # A route the platform (or a proxy before it) does not serve: an older build.
        return Discovery(Dialect.LEGACY, f"the discovery route answered HTTP {status}"), True
    if status != 200 or not isinstance(body, dict) or body.get("code") != "0000":
        return Discovery(Dialect.LEGACY, f"the discovery route answered HTTP {status}"), False
    data = body.get("data")
    if not isinstance(data, dict):
        return Discovery(Dialect.LEGACY, "the discovery reply holds no data"), True
    refusal = _refusal(data)
    if refusal is not None:
        return Discovery(Dialect.LEGACY, refusal), True
    offered = data.get("client")
    client: dict[str, Any] = offered if isinstance(offered, dict) else {}
    state = client.get("state")
    return (
        Discovery(
            Dialect.MANAGED,
            "the platform offers the managed contract",
            service_version=str(data.get("serviceVersion", "")),
            client_state=ClientState(state) if state in set(ClientState) else None,
            supports_cancel=client.get("supportsCancel") is True,
            json_limits=_json_limits(data.get("jsonLimits")),
        ),
        True,
    )


def _refusal(data: dict[str, Any]) -> str | None:
    """Why the contract offered is not one this gateway speaks, or None."""
    if data.get("contractVersion") != CONTRACT_VERSION:
        return f"contract version {data.get('contractVersion')!r} is not {CONTRACT_VERSION}"
    if data.get("durableIdempotency") is not True:
        return "the platform's idempotency keys are not durable"
    operations = data.get("operations")
    listed = set(operations) if isinstance(operations, list) else set()
    missing = sorted(NEEDED_OPERATIONS - listed)
    if missing:
        return f"the platform does not offer {', '.join(missing)}"
    return None


def _json_limits(value: Any) -> JsonLimits | None:
    names = ("maxBytes", "maxDepth", "maxObjectProperties", "maxArrayItems", "maxStringLength")
    if not isinstance(value, dict) or not all(
        isinstance(value.get(n), int) and not isinstance(value.get(n), bool) for n in names
    ):
        return None
    return JsonLimits(*(int(value[n]) for n in names))


class ContractProbe:
    """Discovers, per caller, the dialect to speak; kept for the TTLs above."""

    def __init__(
        self,
        fetch: FetchIntegration,
        mode: ContractMode = "auto",
        *,
        ready_ttl: float = 30.0,
        other_ttl: float = 5.0,
        legacy_ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._mode = mode
        self._ready_ttl = ready_ttl
        self._other_ttl = other_ttl
        self._legacy_ttl = legacy_ttl
        self._clock = clock
        self._known: dict[bytes, tuple[float, Discovery]] = {}  # by the key's digest
        # One question in flight per caller: a burst of creates waits for its answer.
        self._asking: dict[bytes, asyncio.Future[None]] = {}

    async def discover(self, token: str) -> Discovery:
        if self._mode == "legacy":
            return Discovery(Dialect.LEGACY, "the legacy dialect is forced (RPA_UPSTREAM_CONTRACT)")
        if self._mode == "managed":
            return Discovery(
                Dialect.MANAGED, "the managed dialect is forced (RPA_UPSTREAM_CONTRACT)"
            )
        caller = digest(token)
        while True:
            known = self._known.get(caller)
            if known is not None and known[0] > self._clock():
                return known[1]
            asking = self._asking.get(caller)
            if asking is None:
                break
            await asyncio.wait([asking])  # then the answer is kept, or this asks itself
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asking[caller] = done
        try:
            return await self._ask(token, caller)
        finally:
            del self._asking[caller]
            done.set_result(None)

    async def _ask(self, token: str, caller: bytes) -> Discovery:
        now = self._clock()
        try:
            status, body = await self._fetch(token)
        except (OSError, TimeoutError) as exc:
            discovery = Discovery(Dialect.LEGACY, f"the discovery route cannot be reached: {exc}")
            self._known[caller] = (now + self._other_ttl, discovery)
            return discovery
        discovery, definite = read_integration(status, body)
        if not definite:
            ttl = self._other_ttl
        elif discovery.dialect is Dialect.LEGACY:
            ttl = self._legacy_ttl
        elif discovery.client_state is ClientState.READY:
            ttl = self._ready_ttl
        else:
            ttl = self._other_ttl
        self._known[caller] = (now + ttl, discovery)
        return discovery


__all__ = [
    "ClientState",
    "ContractProbe",
    "Dialect",
    "Discovery",
    "JsonLimits",
    "read_integration",
]
