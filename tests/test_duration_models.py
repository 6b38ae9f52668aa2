"""Run durations kept per project: what a sync writes, reads and learns, when the store
fails half-way.  The store here is an in-memory one of the DurationStore seam, because a
real store cannot be made to fail between two calls on cue; tests/test_store.py runs the
same methods against SQLite, Redis and a Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from rpa_gateway.duration_models import DurationModels, SchedulePolicy
from rpa_gateway.poll_schedule import MIN_SAMPLES, backoff_schedule
from rpa_gateway.store.base import StoreError

TODAY = backoff_schedule(1.0, 2.0, 10.0)
POLICY = SchedulePolicy(TODAY, target_latency=2.0, ceiling=10.0)


class FlakyDurations:
    def __init__(self) -> None:
        self.kept: dict[str, list[float]] = {}
        self.fail_writes = False
        self.fail_reads = False

    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None:
        if self.fail_writes:
            raise StoreError("disk full")
        for key, durations in added.items():
            self.kept[key] = [*self.kept.get(key, []), *durations][-keep:]

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]:
        if self.fail_reads:
            raise StoreError("timed out")
        return {key: self.kept[key][-keep:] for key in keys if key in self.kept}


def test_a_failed_read_after_a_write_writes_nothing_twice() -> None:
    async def main() -> list[float]:
        store = FlakyDurations()
        models = DurationModels(store, POLICY)
        await models.schedule_for("p")
        for _ in range(3):
            models.observe("p", 10.0)
        store.fail_reads = True
        await models.sync()
        store.fail_reads = False
        await models.sync()
        return store.kept["p"]

    assert asyncio.run(main()) == [10.0] * 3


def test_what_a_failed_write_kept_is_written_later_and_learned_meanwhile() -> None:
    async def main() -> tuple[list[float], bool]:
        store = FlakyDurations()
        models = DurationModels(store, POLICY)
        store.fail_writes = True
        for _ in range(MIN_SAMPLES):
            models.observe("p", 10.0)
        await models.sync()
        learned = models.current("p").learned  # from what this process saw
        store.fail_writes = False
        await models.sync()
        return store.kept["p"], learned

    kept, learned = asyncio.run(main())
    assert kept == [10.0] * MIN_SAMPLES
    assert learned
