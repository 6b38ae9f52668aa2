"""The execution record and its event log entries."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JsonObject = dict[str, Any]


class Status(StrEnum):
    """Where an execution is.  The last four are terminal."""

    ACCEPTED = "ACCEPTED"  # recorded; the upstream task is being created
    PENDING = "PENDING"  # the upstream task exists and has not started
    RUNNING = "RUNNING"  # the upstream reports the robot working
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


class EventKind(StrEnum):
    STATE = "state"  # the execution changed status
    PROGRESS = "progress"  # a progress report from the robot
    TERMINAL = "terminal"  # the one final event: code, message, data


@dataclass(frozen=True, slots=True)
class Event:
    execution_id: str
    seq: int
    kind: EventKind
    data: JsonObject
    at: float

    @property
    def id(self) -> str:
        """The SSE event id: resuming from it re-attaches to this execution."""
        return f"{self.execution_id}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an execution ended: the terminal frame's code, message and data."""

    status: Status
    code: int
    message: str
    data: JsonObject | None = None


def terminal_data(outcome: Outcome) -> JsonObject:
    """The data of the terminal event that records ``outcome``."""
    return {
        "status": outcome.status.value,
        "code": outcome.code,
        "message": outcome.message,
        "data": outcome.data,
    }


def stored_terminal_data(data: JsonObject) -> JsonObject:
    """A terminal event's data as the stores keep it: without the result, which the
    execution's record holds (a result can be large: it is kept once)."""
    return {key: value for key, value in data.items() if key != "data"}


def with_result(event: Event, result: JsonObject | None) -> Event:
    """A terminal event read back from a store, its result put back from the record."""
    if event.kind is not EventKind.TERMINAL or "data" in event.data:
        return event
    return Event(
        event.execution_id, event.seq, event.kind, {**event.data, "data": result}, event.at
    )


def stored_size(execution: Execution, outcome: Outcome | None = None) -> int:
    """About the bytes an execution holds in a store: its request, and once it ends
    (``outcome``, or its own) its result and logs.  Its events, small and bounded in
    number, are not counted."""
    request = execution.request
    size = len(request.project_id) + len(request.sid) + len(_compact(request.stored()))
    ended = outcome or execution.outcome
    return size + (ended_size(execution, ended) if ended is not None else 0)


def ended_size(execution: Execution, outcome: Outcome) -> int:
    """What an execution's end adds to :func:`stored_size`: its result and logs."""
    size = len(_compact(outcome.data)) if outcome.data is not None else 0
    return size + (len(_compact(execution.logs)) if execution.logs else 0)


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def outcome_of(data: JsonObject) -> Outcome:
    """The outcome a terminal event's data records (``terminal_data`` read back)."""
    status = data.get("status")
    result = data.get("data")
    return Outcome(
        Status(status) if isinstance(status, str) else Status.FAILED,
        int(data.get("code", 0)),
        str(data.get("message", "")),
        result if isinstance(result, dict) else None,
    )


@dataclass(slots=True)
class ExecutionRequest:
    """What the caller asked for, without any secret."""

    project_id: str
    sid: str
    params: JsonObject = field(default_factory=dict)
    exec_position: str = "EXECUTOR"
    version: int | None = None
    phone_number: str | None = None
    trace_parent: str | None = None  # the caller's W3C traceparent, parent of our span
    # The exact body of a create under the platform's managed contract, kept as first
    # sent: the platform fingerprints the body of a repeat with the same idempotency key,
    # so a create whose reply was lost is sent again byte for byte.  None: a legacy create
    # (it cannot be repeated safely).
    managed_body: str | None = None

    @property
    def managed(self) -> bool:
        """Created under the platform's managed contract: polled and cancelled by it."""
        return self.managed_body is not None

    def stored(self) -> JsonObject:
        """What a store keeps of it beside the project and sid (see :meth:`from_stored`)."""
        stored: JsonObject = {
            "params": self.params,
            "exec_position": self.exec_position,
            "version": self.version,
            "phone_number": self.phone_number,
            "trace_parent": self.trace_parent,
        }
        if self.managed_body is not None:
            stored["managed_body"] = self.managed_body
        return stored

    @classmethod
    def from_stored(cls, project_id: str, sid: str, stored: JsonObject) -> ExecutionRequest:
        return cls(
            project_id=project_id,
            sid=sid,
            params=stored.get("params") or {},
            exec_position=stored.get("exec_position") or "EXECUTOR",
            version=stored.get("version"),
            phone_number=stored.get("phone_number"),
            trace_parent=stored.get("trace_parent"),
            managed_body=stored.get("managed_body"),
        )


def request_hash(
    project_id: str,
    params: JsonObject | None,
    *,
    sid: str | None = None,
    exec_position: str = "EXECUTOR",
    version: int | None = None,
    phone_number: str | None = None,
) -> str:
    """Identifies a create request as its caller sent it (a generated sid is not part of it),
    to tell a replay under the same idempotency key from a different request: the same
    for the same request through any door."""
    canonical = json.dumps(
        {
            "project_id": project_id,
            "sid": sid,
            "exec_position": exec_position,
            "params": params,
            "version": version,
            "phone_number": phone_number,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class Execution:
    id: str
    request: ExecutionRequest
    status: Status
    created_at: float
    updated_at: float
    deadline_at: float
    owner: str = ""  # keyed fingerprint of the token that created it
    idempotency_key: str | None = None
    request_hash: str | None = None
    upstream_id: str | None = None
    # Set (and stored) before the create request goes out: after a crash, a run
    # with this flag and no upstream id may exist upstream, so it is not recreated.
    create_started: bool = False
    cancel_requested: bool = False
    finished_at: float | None = None
    outcome: Outcome | None = None
    polls: int = 0
    retries: int = 0
    last_seq: int = 0
    logs: list[str] = field(default_factory=list)  # the run's log lines (local backend)


def change_of(execution: Execution, kind: EventKind, data: JsonObject, at: float) -> JsonObject:
    """What a feed of executions says when the execution gets this event: its state after
    it, in brief (the progress report itself for a progress event)."""
    status = data.get("status") if kind is not EventKind.PROGRESS else None
    change: JsonObject = {
        "id": execution.id,
        "project_id": execution.request.project_id,
        "sid": execution.request.sid,
        "status": status if isinstance(status, str) else execution.status.value,
        "created_at": execution.created_at,
        "updated_at": at,
        "finished_at": at if kind is EventKind.TERMINAL else execution.finished_at,
    }
    if kind is EventKind.TERMINAL:
        change["code"] = data.get("code")
        change["message"] = data.get("message")
    elif kind is EventKind.PROGRESS:
        change["progress"] = data
    return change


def snapshot_change(execution: Execution) -> JsonObject:
    """The same brief as :func:`change_of`, of the execution as it stands."""
    change: JsonObject = {
        "id": execution.id,
        "project_id": execution.request.project_id,
        "sid": execution.request.sid,
        "status": execution.status.value,
        "created_at": execution.created_at,
        "updated_at": execution.updated_at,
        "finished_at": execution.finished_at,
    }
    if execution.outcome is not None:
        change["code"] = execution.outcome.code
        change["message"] = execution.outcome.message
    return change


def new_execution_id() -> str:
    return uuid.uuid4().hex


MAX_SEQ = 2**63 - 1  # what the store's integer columns hold

_SEQ = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²" and "٣"


def parse_seq(text: str) -> int | None:
    """A sequence number from ASCII digits, at most :data:`MAX_SEQ`; else ``None``."""
    if not _SEQ.fullmatch(text):
        return None
    seq = int(text)
    return seq if seq <= MAX_SEQ else None


def parse_event_id(event_id: str) -> tuple[str, int] | None:
    """Split ``<execution id>:<seq>``; ``None`` when it is not of that form."""
    execution_id, sep, seq_text = event_id.strip().rpartition(":")
    seq = parse_seq(seq_text)
    if not sep or not execution_id or seq is None:
        return None
    return execution_id, seq
