"""Result codes and messages of the wire contract callers already handle.

Codes 55000-55999 belong to this service.  New ones: ``CANCELLED`` ends an
execution cancelled upstream or through this service; ``RECONNECT`` ends a
stream (not the execution) when the service shuts down, so a caller that cannot
resume fails loudly instead of reading a stream without a result as success;
``UNAVAILABLE`` refuses a request the service cannot take now (restarting, store
down) - nothing was started, retrying later may work; ``RESULT_TOO_LARGE`` ends a
stream whose result would not fit in one line a client can read.  A request
refused for what it is (no token, bad body, unknown project) gets
``CREATE_ERROR``, as the reference's upstream would answer it.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    SUCCESS = 0
    CREATE_ERROR = 55001
    QUERY_ERROR = 55002
    TIMEOUT = 55003
    CANCELLED = 55004
    RECONNECT = 55005
    UNAVAILABLE = 55006
    RESULT_TOO_LARGE = 55007
    UNKNOWN = 55999


def success_message() -> str:
    return "Success"


def create_error_message(detail: str) -> str:
    return f"Create task error, detail: {detail}"


def query_error_message(detail: str) -> str:
    return f"Query task error: {detail}"


def timeout_message(detail: str = "") -> str:
    return f"Timeout error: {detail}" if detail else "Timeout error"


def cancelled_message(detail: str = "") -> str:
    return f"Task cancelled: {detail}" if detail else "Task cancelled"


def reconnect_message(event_id: str, *, run_outlives_service: bool = True) -> str:
    if not run_outlives_service:  # a local run is a process of this service
        return (
            "Service restarting: this run stops with it and its execution ends with 55002;"
            f" reconnect with Last-Event-ID: {event_id} to get that end"
        )
    return (
        "Service restarting: the execution goes on; reconnect with"
        f" Last-Event-ID: {event_id} to get its result"
    )


LOST_MESSAGE = (
    "the execution was lost: the execution store lost its data (Redis restarted empty, or"
    " flushed) and no replica still drove it; its outcome is unknown"
)


def unknown_error_message(detail: str) -> str:
    return f"Unknown error: {detail}"


def unavailable_message(detail: str) -> str:
    return f"Service unavailable: {detail}"


def result_too_large_message(size: int, limit: int, code: int, execution_id: str) -> str:
    ended = "succeeded" if code == Code.SUCCESS else f"ended with code {code}"
    return (
        f"Result too large for this stream: its frame is {size} bytes, over the"
        f" {limit}-byte line limit (RPA_MAX_FRAME_BYTES); the execution {ended} and"
        f" GET /rpa/v1/executions/{execution_id} returns the whole result"
    )
