"""What the OpenAPI document says each route answers: every status, in its real form.

Refusals are ``ErrorBody`` JSON - on ``/rpa/v1/exec`` one SSE ``data:`` frame too
(unless the caller asks for JSON only).  408, 431 and 503 may come from the HTTP
limits before any route runs, so every route lists them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rpa_gateway.api.body import ExecBody
from rpa_gateway.api.errors import ErrorBody

_WHY = {
    400: "the request is malformed (body not JSON, odd input, bad cursor)",
    401: "no token, or one that is not accepted",
    404: "no such execution for this token (or nothing at this path)",
    405: "method not allowed",
    408: "no complete request head (RPA_HEADER_TIMEOUT) or body (RPA_BODY_TIMEOUT) in time",
    409: "the execution has already ended, or the request conflicts with what exists",
    413: "body larger than RPA_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    422: "a field is invalid; `fields` names it",
    429: "this token has as much under way as it may; see Retry-After",
    431: "request head larger than RPA_MAX_HEADER_BYTES",
    500: "a fault inside the service",
    503: "shutting down, store unavailable, or too many connections; see Retry-After",
}
_ALWAYS = (408, 431, 500, 503)

_FRAME_EXAMPLE = (
    'data: {"code":55001,"message":"Create task error, detail: Authorization header is'
    ' missing or empty","sid":"","data":null,"error":"unauthorized"}\n\n'
)


class Frame(BaseModel):
    """The data of a ``/rpa/v1/exec`` frame: the result, a progress report or a refusal."""

    code: int = Field(description="0 success; see the README's codes")
    message: str
    sid: str = Field(description="the request's sid; empty when it could not be read")
    data: dict[str, Any] | None
    error: str | None = Field(default=None, description="refusals: the machine-readable kind")
    fields: list[str] | None = Field(default=None, description="refusals: the fields at fault")


def _sse_event(data: dict[str, Any], events: list[str]) -> dict[str, Any]:
    """One event of a stream, as Open API 3.1 describes stream items."""
    return {
        "type": "object",
        "required": ["data", "event"],
        "properties": {
            "event": {"type": "string", "enum": events},
            "id": {"type": "string", "description": "`<execution id>:<seq>`: resume after it"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


_FRAME_EVENT = _sse_event(Frame.model_json_schema(), ["message", "progress"])
_NATIVE_EVENT = _sse_event(
    {
        "type": "object",
        "required": ["execution_id", "seq", "at", "status"],
        "properties": {
            "execution_id": {"type": "string"},
            "seq": {"type": "integer"},
            "at": {"type": "number", "description": "epoch seconds"},
            "status": {"type": "string"},
        },
        "additionalProperties": True,
    },
    ["state", "progress", "terminal"],
)


_CHANGE_EVENT = _sse_event(
    {
        "type": "object",
        "required": ["id", "project_id", "sid", "status", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string", "description": "the execution"},
            "project_id": {"type": "string"},
            "sid": {"type": "string"},
            "status": {"type": "string"},
            "created_at": {"type": "number", "description": "epoch seconds"},
            "updated_at": {"type": "number", "description": "epoch seconds, this change's"},
            "finished_at": {"type": ["number", "null"]},
            "code": {"type": "integer", "description": "once ended"},
            "message": {"type": "string", "description": "once ended"},
            "progress": {
                "type": "object",
                "description": "a progress report: message, percent",
            },
        },
        "additionalProperties": True,
    },
    ["change"],
)


def change_stream() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "`change` events (id: milliseconds), `: ping` comments",
            "content": {"text/event-stream": {"schema": _CHANGE_EVENT}},
        }
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}


def errors(*statuses: int, stream: bool = False) -> dict[int | str, dict[str, Any]]:
    """Error responses of a route; ``stream``: also as the compat stream's one data frame."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *_ALWAYS}):
        response: dict[str, Any] = {"model": ErrorBody, "description": _WHY[status]}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        if stream:
            response["content"] = {
                "text/event-stream": {"schema": _FRAME_EVENT, "example": _FRAME_EXAMPLE}
            }
        documented[status] = response
    return documented


REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when the Idempotency-Key returned the execution it made before",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def compat_stream() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "id-only events, `: ping` comments, then exactly one `data:` frame",
            "content": {"text/event-stream": {"schema": _FRAME_EVENT}},
            "headers": REPLAYED,
        }
    }


def _parameter(where: str, name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "in": where,
        "name": name,
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


IDEMPOTENCY_KEY = _parameter(
    "header",
    "Idempotency-Key",
    "1-255 characters: the execution this token made with this key and this body is returned"
    " instead of a new one; the same key with another body is a 422",
    minLength=1,
    maxLength=255,
)
LAST_EVENT_ID = _parameter(
    "header",
    "Last-Event-ID",
    "`<execution id>:<seq>`: re-attach to that execution after that event (no new run)",
)
LAST_EVENT_ID_QUERY = _parameter(
    "query", "last_event_id", "as the Last-Event-ID header, where headers cannot be set"
)
PROGRESS = _parameter(
    "query", "progress", "`true`: progress frames too (off: clients take the first data frame)"
)
PROGRESS_HEADER = _parameter("header", "X-RPA-Progress", "as `?progress=true`")
EXEC_PARAMETERS: dict[str, Any] = {
    "parameters": [IDEMPOTENCY_KEY, LAST_EVENT_ID, LAST_EVENT_ID_QUERY, PROGRESS, PROGRESS_HEADER]
}
CREATED_HEADERS = {
    "Location": {
        "description": "the execution: GET it, or its /events",
        "schema": {"type": "string"},
    },
    **REPLAYED,
}


def native_stream() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "every event of the execution, named, then the end",
            "content": {"text/event-stream": {"schema": _NATIVE_EVENT}},
        }
    }


EXEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ExecBody.model_json_schema()}},
    }
}


def links_to_the_execution() -> dict[str, Any]:
    """What a created execution's id leads to (and schema-driven fuzzers follow)."""
    by_id = {"execution_id": "$response.body#/id"}
    return {
        name: {"operationId": operation, "parameters": by_id}
        for name, operation in (
            ("GetExecution", "get_execution"),
            ("ExecutionEvents", "execution_events"),
            ("CancelExecution", "cancel_execution"),
        )
    }
