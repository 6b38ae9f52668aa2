"""The managed contract's wire (``shared/reference/upstream-managed-executions.md``): the
create body with its idempotency key and deadline, the snapshot a poll returns, and the
named codes the platform refuses with.  Pure functions: ``astron`` sends and receives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from rpa_gateway.backends import legacy
from rpa_gateway.backends.base import TaskPhase, TaskState
from rpa_gateway.backends.replies import as_object
from rpa_gateway.backends.run_times import run_seconds
from rpa_gateway.executions import ExecutionRequest

MAX_EXECUTION_TIMEOUT = 86_400  # seconds: the platform's bound for execution_timeout
WORKING = frozenset({"accepted", "running"})
# A create the platform refused because the account's desktop client cannot take it now:
# nothing was created, and repeating it at once would only be refused again.
CLIENT_NOT_READY = frozenset({"CLIENT_OFFLINE", "CLIENT_CAPABILITY_UNCONFIRMED"})
CLIENT_OFFLINE_MESSAGE = "the RPA client of this account is offline; start it and retry"


def idempotency_key(execution_id: str) -> str:
    """The same for every send of one execution's create: by any replica, after any
    restart.  The platform scopes keys to the account, so the id alone would do; the
    prefix says whose key it is to someone reading the platform's records."""
    return f"rpa-gateway:{execution_id}"


def execution_timeout(seconds_left: float) -> int:
    """The whole seconds that end before the execution's deadline (29 of 30.0 or of 29.7
    left), within the platform's 1..86400: the platform's clock starts only when the
    robot launches, so it is given no more than this service waits."""
    return max(1, min(MAX_EXECUTION_TIMEOUT, math.ceil(seconds_left) - 1))


def create_body(execution_id: str, request: ExecutionRequest, seconds_left: float) -> str:
    """The create's body as it is sent, every time (the platform fingerprints it): the
    legacy body and the two managed fields."""
    body = legacy.create_body(request)
    body["idempotency_key"] = idempotency_key(execution_id)
    body["execution_timeout"] = execution_timeout(seconds_left)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Refusal:
    """A named refusal: ``{"detail": {"code": ..., "message"?: ...}}``."""

    code: str
    message: str


def refusal(reply: Any) -> Refusal | None:
    detail = reply.get("detail") if isinstance(reply, dict) else None
    code = detail.get("code") if isinstance(detail, dict) else None
    if not isinstance(code, str) or not code:
        return None
    assert isinstance(detail, dict)
    message = detail.get("message")
    return Refusal(code[:80], str(message)[:300] if message else "")


def refusal_detail(found: Refusal) -> str:
    """What a caller reads in the 55001 message for a platform's refusal."""
    if found.code in CLIENT_NOT_READY:
        return f"{CLIENT_OFFLINE_MESSAGE} ({found.code})"
    if found.code == "WORKFLOW_NOT_FOUND":
        return "project not found or not published for API access (WORKFLOW_NOT_FOUND)"
    if found.message:
        return f"the RPA platform refused the run: {found.code}: {found.message}"
    return f"the RPA platform refused the run: {found.code}"


def snapshot_state(snapshot: dict[str, Any]) -> TaskState:
    """The run's state from a snapshot (its ``status`` is the managed state).  Strings are
    the platform's: the caller of this scrubs the token from what it keeps."""
    status = str(snapshot.get("status"))
    started = snapshot.get("startedAt")
    started_at = started if isinstance(started, str) else None
    error = snapshot.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    named = f"{code}: {message}" if code and message else str(code or message or "")
    if status == "succeeded":
        result = snapshot.get("result")
        return TaskState(
            TaskPhase.COMPLETED,
            status,
            data=as_object(result),
            ran_for=run_seconds(snapshot.get("startedAt"), snapshot.get("finishedAt")),
            started_at=started_at,
        )
    if status == "failed":
        return TaskState(TaskPhase.FAILED, status, error=named or "robot failed")
    if status == "cancelled":
        return TaskState(TaskPhase.CANCELLED, status, error=named or None)
    if status == "timeout":
        return TaskState(
            TaskPhase.TIMED_OUT,
            status,
            error="the RPA platform stopped the run at its deadline"
            f" ({code or 'EXECUTION_TIMEOUT'})",
        )
    return TaskState(
        TaskPhase.WORKING,
        status if status in WORKING or status == "unknown" else status[:40],
        started_at=started_at,
        upstream_code=str(code)[:80] if code else None,
    )
