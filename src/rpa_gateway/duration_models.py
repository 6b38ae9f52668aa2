"""Each caller's projects' recent run durations and the poll schedules learned from them.

The durations live in the store (shared by replicas, kept across restarts); this
process keeps a copy per project it polls for, adds what it observes at once, and
every ``sync_interval`` seconds writes its new observations in one batch and reads
back what the other replicas added.  A run costs a dict lookup, not a store call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rpa_gateway.poll_schedule import DurationModel, Schedule, learned_schedule
from rpa_gateway.store.base import StoreError

log = logging.getLogger(__name__)

KEEP = 64  # recent durations per project
MAX_SCHEDULES_PER_SYNC = 50
_MAX_PROJECTS = 10_000  # kept in memory; the least recently polled for go first


class DurationStore(Protocol):
    """The part of :class:`store.base.Store` this uses (documented there)."""

    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None: ...

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]: ...


def model_key(owner: str, project_id: str, version: int | None) -> str:
    """Whose runs of which project these are.  Per caller: a project id belongs to a
    platform account, so two callers' ``x`` may be different robots, and one caller's
    runs must not shape another's schedule.  A JSON array: no two (caller, project,
    version) share a key, whatever their text (``x@v1`` is not ``x`` version 1)."""
    return json.dumps([owner, project_id, version], ensure_ascii=False, separators=(",", ":"))


class Schedules(Protocol):
    """What the supervisor asks: each project's schedule, and how long its runs took."""

    async def schedule_for(self, key: str) -> Schedule: ...

    def current(self, key: str) -> Schedule: ...

    def observe(self, key: str, seconds: float) -> None: ...


class FixedSchedules:
    """One schedule for every project, learning nothing."""

    def __init__(self, schedule: Schedule) -> None:
        self._schedule = schedule

    async def schedule_for(self, key: str) -> Schedule:
        return self._schedule

    def current(self, key: str) -> Schedule:
        return self._schedule

    def observe(self, key: str, seconds: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    today: Schedule  # for projects without enough history
    target_latency: float
    ceiling: float
    learn: bool = True  # False: ``today`` for every project

    def schedule(self, durations: Sequence[float]) -> Schedule:
        if not self.learn:
            return self.today
        model = DurationModel.fit(durations)
        if model is None:
            return self.today
        return learned_schedule(model, self.target_latency, self.ceiling, self.today)


class _Project:
    __slots__ = ("durations", "new", "schedule", "stale")

    def __init__(self, durations: list[float], schedule: Schedule) -> None:
        self.durations = durations
        self.schedule = schedule
        self.new: list[float] = []  # observed here, not yet written
        self.stale = False  # durations changed since the schedule was made


class DurationModels:
    def __init__(
        self, store: DurationStore, policy: SchedulePolicy, sync_interval: float = 5.0
    ) -> None:
        self._store = store
        self._policy = policy
        self._sync_interval = sync_interval
        self._projects: OrderedDict[str, _Project] = OrderedDict()
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._store_failing = False
        self._used: set[str] = set()  # polled for since the last sync

    async def schedule_for(self, key: str) -> Schedule:
        """The project's schedule; its durations are read from the store the first time."""
        project = self._projects.get(key)
        if project is None:
            await self._load(key)
            project = self._projects.get(key)
            if project is None:
                return self._policy.today
        self._projects.move_to_end(key)
        self._used.add(key)
        return project.schedule

    def current(self, key: str) -> Schedule:
        project = self._projects.get(key)
        return project.schedule if project is not None else self._policy.today

    def observe(self, key: str, seconds: float) -> None:
        """A run of the project ended after ``seconds``; learned from at the next sync (a
        schedule takes a few ms to make: not once per run)."""
        if not seconds > 0:
            return
        project = self._projects.get(key)
        if project is None:
            project = self._remember(key, [])
        project.durations.append(seconds)
        del project.durations[:-KEEP]
        project.new.append(seconds)
        project.stale = True

    async def run(self) -> None:
        """Write new observations and read the other replicas' ones, until cancelled."""
        while True:
            await asyncio.sleep(self._sync_interval)
            try:
                await self.sync()
            except Exception:  # a bug, or data it cannot read: learning must not stop
                log.exception("run durations: sync failed; trying again")

    async def sync(self) -> None:
        """Store what was observed here, take in what other replicas stored for the projects
        polled for since the last sync, and make the schedules of those whose durations
        changed (at most MAX_SCHEDULES_PER_SYNC: a schedule takes a few ms of the loop)."""
        added: dict[str, list[float]] = {}
        for key, project in self._projects.items():
            if project.new:
                added[key], project.new = project.new, []
        used, self._used = self._used, set()
        stored: dict[str, list[float]] = {}
        try:
            if added:
                await self._store.add_durations(added, KEEP)
        except StoreError as exc:
            self._failing(exc)
            for key, unwritten in added.items():  # written with the next sync
                if key in self._projects:
                    project = self._projects[key]
                    project.new = (unwritten + project.new)[-KEEP:]
        else:
            try:
                stored = await self._store.durations(
                    [key for key in used if key in self._projects], KEEP
                )
            except StoreError as exc:
                self._failing(exc)
            else:
                self._store_failing = False
        made = 0
        for key, project in self._projects.items():
            if key in stored:
                durations = (stored[key] + project.new)[-KEEP:]
                if durations != project.durations:
                    project.durations, project.stale = durations, True
            if project.stale and made < MAX_SCHEDULES_PER_SYNC:
                project.schedule = self._policy.schedule(project.durations)
                project.stale = False
                made += 1

    async def _load(self, key: str) -> None:
        pending = self._loading.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            stored = await self._store.durations([key], KEEP)
        except StoreError as exc:
            self._failing(exc)
            stored = {}
        except Exception:  # data it cannot read: today's schedule, the run goes on
            log.exception("run durations of a project cannot be read")
            stored = {}
        finally:
            del self._loading[key]
            future.set_result(None)
        if key not in self._projects:
            self._remember(key, stored.get(key, []))

    def _remember(self, key: str, durations: list[float]) -> _Project:
        project = _Project(durations[-KEEP:], self._policy.schedule(durations))
        self._projects[key] = project
        while len(self._projects) > _MAX_PROJECTS:
            self._projects.popitem(last=False)
        return project

    def _failing(self, exc: StoreError) -> None:
        if not self._store_failing:
            log.warning("run durations cannot be read or stored: %s", exc)
        self._store_failing = True
