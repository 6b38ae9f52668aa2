"""Execution operations the HTTP layer calls: create, look up, follow."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from rpa_gateway import codes
from rpa_gateway.codes import Code
from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    Outcome,
    Status,
    new_execution_id,
)
from rpa_gateway.store.base import Store, StoreError
from rpa_gateway.supervisor import Supervisor

log = logging.getLogger(__name__)


class ExecutionService:
    def __init__(self, store: Store, supervisor: Supervisor, *, timeout: float) -> None:
        self._store = store
        self._supervisor = supervisor
        self._timeout = timeout

    def create(self, request: ExecutionRequest, token: str) -> Execution:
        """Record a new execution and hand it to the supervisor.  Raises StoreError."""
        now = time.time()
        execution = Execution(
            id=new_execution_id(),
            request=request,
            status=Status.ACCEPTED,
            created_at=now,
            updated_at=now,
            deadline_at=now + self._timeout,
        )
        self._store.create(execution)
        log.info(
            "execution %s accepted: project %s, sid %s",
            execution.id,
            request.project_id,
            request.sid,
        )
        self._supervisor.start(execution, token)
        return execution

    def close_interrupted(self) -> int:
        """End executions a previous process left unfinished; returns how many.

        Their callers' tokens lived only in that process's memory, so they cannot
        be polled again; each gets its terminal event instead of hanging forever.
        """
        interrupted = self._store.unfinished()
        for execution in interrupted:
            self._store.finish(
                execution,
                Outcome(
                    Status.FAILED,
                    Code.UNKNOWN,
                    codes.unknown_error_message("the service restarted during the execution"),
                ),
            )
        return len(interrupted)

    async def follow(
        self, execution_id: str, after_seq: int, idle_interval: float
    ) -> AsyncIterator[Event | None]:
        """The execution's events after ``after_seq``, then live ones until the terminal one.

        Yields ``None`` whenever ``idle_interval`` seconds pass without an event, so
        the caller can keep the connection alive.  A failing store still ends the
        sequence with a terminal event.
        """
        cursor = after_seq
        try:
            async with self._store.subscribe(execution_id) as subscription:
                for event in self._store.events_after(execution_id, cursor):
                    yield event
                    cursor = event.seq
                    if event.kind is EventKind.TERMINAL:
                        return
                while True:
                    try:
                        async with asyncio.timeout(idle_interval):
                            event = await subscription.get()
                    except TimeoutError:
                        yield None
                        continue
                    if event.seq <= cursor:
                        continue
                    backlog = (
                        self._store.events_after(execution_id, cursor)
                        if event.seq > cursor + 1
                        else [event]
                    )
                    for missed in backlog:
                        yield missed
                        cursor = missed.seq
                        if missed.kind is EventKind.TERMINAL:
                            return
        except StoreError:
            log.exception("execution %s: cannot read its events", execution_id)
            yield Event(
                execution_id,
                cursor + 1,
                EventKind.TERMINAL,
                {
                    "status": Status.FAILED.value,
                    "code": Code.UNKNOWN.value,
                    "message": codes.unknown_error_message("the execution store failed"),
                    "data": None,
                },
                time.time(),
            )
