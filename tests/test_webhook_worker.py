"""The delivery worker's looks at the outbox: a run's start and end wake it only when the
run's caller has endpoints, as an endpoint registered here says at once.  A real SQLite
store and a real worker; the store's webhook side is wrapped only to count its reads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rpa_gateway.security import TokenVault
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.webhooks.registry import Destinations, WebhookRegistry
from rpa_gateway.webhooks.secrets import SecretSealer
from rpa_gateway.webhooks.sender import Sender
from rpa_gateway.webhooks.worker import DeliveryPolicy, DeliveryWorker
from tests.test_store import SUCCEEDED, new_execution

ENDS = 10
SPACING = 0.15  # seconds between ends: longer than the worker's gathering of a wake


class CountedReads:
    """The store's webhook side, its looks for due deliveries counted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.looks = 0

    async def next_due(self, now: float) -> float | None:
        self.looks += 1
        found: float | None = await self._inner.next_due(now)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def looks_during_ends(store: SqliteStore, reads: CountedReads, owner: str) -> float:
    """Looks at the outbox per second while ENDS runs of ``owner`` end, one every SPACING."""
    before, began = reads.looks, time.monotonic()
    for _ in range(ENDS):
        execution = new_execution(owner)
        await store.create(execution, None)
        await store.finish(execution, SUCCEEDED)
        await asyncio.sleep(SPACING)
    return (reads.looks - before) / (time.monotonic() - began)


def test_ends_wake_the_worker_only_for_callers_with_endpoints(tmp_path: Path) -> None:
    async def scenario() -> tuple[float, float]:
        store = SqliteStore(tmp_path / "db")
        assert store.webhooks is not None
        reads = CountedReads(store.webhooks)
        vault = TokenVault(b"k" * 32, None)
        worker = DeliveryWorker(
            store,
            reads,  # type: ignore[arg-type]
            Sender(timeout=2, allow_private=False, user_agent="test"),
            DeliveryPolicy(retry_schedule=[60.0], disable_after=86400, max_result_bytes=1000),
            holder="me",
            lease_seconds=30,
            render=lambda execution: b"{}",
            sealer=SecretSealer(vault),
        )
        registry = WebhookRegistry(
            reads,  # type: ignore[arg-type]
            vault,
            Destinations(allow_hosts=(), allow_private=False),
            per_caller=5,
            rotation_seconds=60,
            wake_worker=worker.wake,
            endpoints_added=worker.endpoints_added,
        )
        worker.start()
        try:
            await asyncio.sleep(0.2)  # its first look
            token = "caller-token"
            owner = vault.fingerprint(token)
            without = await looks_during_ends(store, reads, owner)
            # Registered here: the caller's next ends wake the worker, though it found the
            # caller without endpoints a moment ago.  For starts only, so that these ends
            # leave nothing to deliver: every look is one an end woke it for.
            url = "https://hooks.example.com/in"
            await registry.add(token, url, ["execution.started"], None, "")
            with_one = await looks_during_ends(store, reads, owner)
        finally:
            await worker.stop()
            await store.close()
        return without, with_one

    without, with_one = asyncio.run(scenario())
    # Idle, the worker looks once a second (and once to learn of the caller); each end
    # woke it before, 1 / SPACING a second.
    assert without < 2.5, f"{without:.1f} looks a second for a caller without endpoints"
    assert with_one > 3.5, f"{with_one:.1f} looks a second once the caller has an endpoint"
