"""The legacy routes' wire (``shared/reference/upstream-rpa-openapi.md``): the create body
the reference plugin sends, and the UPPERCASE ``data.execution`` a poll returns."""

from __future__ import annotations

import logging
from typing import Any

from rpa_gateway.backends.base import TaskPhase, TaskState
from rpa_gateway.backends.replies import as_object, clip
from rpa_gateway.backends.run_times import run_seconds
from rpa_gateway.executions import ExecutionRequest, JsonObject

log = logging.getLogger(__name__)

WORKING_STATUSES = frozenset({"PENDING", "RUNNING"})


def create_body(request: ExecutionRequest) -> JsonObject:
    body: JsonObject = {
        "project_id": request.project_id,
        "params": request.params,
        "exec_position": request.exec_position,
    }
    # The reference plugin's create sends these two only when the caller gave them.
    if request.version is not None:
        body["version"] = request.version
    if request.phone_number:
        body["phone_number"] = request.phone_number
    return body


def task_state(execution: dict[str, Any], token: str) -> TaskState:
    """The run's state; strings from the platform are kept only with the token scrubbed."""
    upstream_status = str(execution["status"])
    error = execution.get("error")
    error_text = clip(str(error), token) if error else None
    if upstream_status == "COMPLETED":
        result = execution.get("result")
        outputs = result.get("data") if isinstance(result, dict) else None
        return TaskState(
            TaskPhase.COMPLETED,
            upstream_status,
            data=as_object(outputs),
            ran_for=run_seconds(execution.get("start_time"), execution.get("end_time")),
        )
    if upstream_status == "FAILED":
        return TaskState(TaskPhase.FAILED, upstream_status, error=error_text or "robot failed")
    if upstream_status == "CANCELLED":
        return TaskState(TaskPhase.CANCELLED, upstream_status, error=error_text)
    if upstream_status not in WORKING_STATUSES:
        upstream_status = clip(upstream_status, token)[:40]
        log.warning("unknown upstream status %r, treated as still working", upstream_status)
    return TaskState(TaskPhase.WORKING, upstream_status)
