"""The native API's response schemas: what a caller sees of an execution (no secrets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from rpa_gateway.backends.base import TaskInfo
from rpa_gateway.executions import Execution, Status


class Attempts(BaseModel):
    """How hard the service worked on the upstream run."""

    polls: int = Field(description="status queries sent upstream")
    retries: int = Field(description="queries or creates repeated after a fault")


class Result(BaseModel):
    """The terminal frame's content: what the compat stream's `data:` frame carries."""

    code: int = Field(
        description="0 success; 55001 create error; 55002 query error or robot "
        "failure; 55003 timeout; 55004 cancelled; 55999 internal (the compat stream "
        "also sends 55005 restarting, 55006 unavailable, 55007 result too large)"
    )
    message: str
    data: dict[str, Any] | None = Field(description="the robot's outputs on success")


class ExecutionView(BaseModel):
    """One execution: a robot run and its state."""

    id: str
    project_id: str
    sid: str
    params: dict[str, Any]
    status: Status = Field(
        description="ACCEPTED, PENDING, RUNNING, then one of SUCCEEDED, "
        "FAILED, TIMED_OUT, CANCELLED"
    )
    upstream_id: str | None = Field(description="the RPA platform's id for the run")
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime
    finished_at: datetime | None
    cancel_requested: bool
    attempts: Attempts
    result: Result | None = Field(description="present once the execution has ended")
    last_event_id: str = Field(description="resume the event stream after this event")
    queue_position: int | None = Field(
        default=None, description="place in the queue while waiting for a free run slot (local)"
    )
    logs: list[str] = Field(
        default_factory=list, description="the run's last log lines (local backend)"
    )

    @classmethod
    def of(cls, execution: Execution, run: TaskInfo | None = None) -> ExecutionView:
        outcome = execution.outcome
        return cls(
            id=execution.id,
            project_id=execution.request.project_id,
            sid=execution.request.sid,
            params=execution.request.params,
            status=execution.status,
            upstream_id=execution.upstream_id,
            created_at=_time(execution.created_at),
            updated_at=_time(execution.updated_at),
            deadline_at=_time(execution.deadline_at),
            finished_at=_time(execution.finished_at) if execution.finished_at else None,
            cancel_requested=execution.cancel_requested,
            attempts=Attempts(polls=execution.polls, retries=execution.retries),
            result=Result(code=outcome.code, message=outcome.message, data=outcome.data)
            if outcome is not None
            else None,
            last_event_id=f"{execution.id}:{execution.last_seq}",
            queue_position=run.queue_position if run is not None else None,
            logs=run.logs if run is not None else execution.logs,
        )


class ProjectView(BaseModel):
    """A project the local backend can run."""

    id: str
    name: str
    description: str
    timeout: float | None = Field(description="seconds a run may take")
    params_schema: dict[str, Any] | None = Field(description="JSON Schema of `params`")


class ProjectList(BaseModel):
    projects: list[ProjectView]


class ExecutionPage(BaseModel):
    """A page of executions, newest first."""

    items: list[ExecutionView]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; absent on the last page"
    )


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
