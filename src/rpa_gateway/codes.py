"""Result codes and messages of the wire contract callers already handle.

Codes 55000-55999 belong to this service.  New ones: ``CANCELLED`` ends an
execution cancelled upstream or through this service; ``RECONNECT`` ends a
stream (not the execution) when the service shuts down, so a caller that cannot
resume fails loudly instead of reading a stream without a result as success.
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
    UNKNOWN = 55999


def success_message() -> str:
    return "Success"


def create_error_message(detail: str) -> str:
    return f"Create task error, detail: {detail}"


def query_error_message(detail: str) -> str:
    return f"Query task error: {detail}"


def timeout_message() -> str:
    return "Timeout error"


def cancelled_message(detail: str = "") -> str:
    return f"Task cancelled: {detail}" if detail else "Task cancelled"


def reconnect_message(event_id: str) -> str:
    return (
        "Service restarting: the execution goes on; reconnect with"
        f" Last-Event-ID: {event_id} to get its result"
    )


def unknown_error_message(detail: str) -> str:
    return f"Unknown error: {detail}"
