"""A webhook endpoint a caller registered, and one delivery of one event to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from rpa_gateway.executions import Status

SUCCEEDED = "execution.succeeded"
FAILED = "execution.failed"
CANCELLED = "execution.cancelled"
TIMED_OUT = "execution.timed_out"
STARTED = "execution.started"
TEST = "webhook.test"
TERMINAL_EVENTS = (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT)
EVENT_TYPES = (*TERMINAL_EVENTS, STARTED)

_BY_STATUS = {
    Status.SUCCEEDED: SUCCEEDED,
    Status.FAILED: FAILED,
    Status.CANCELLED: CANCELLED,
    Status.TIMED_OUT: TIMED_OUT,
}


def terminal_event(status: Status) -> str:
    return _BY_STATUS[status]


def subscribed(event_type: str) -> str:
    """How an endpoint's event list holds a type (what stores search it for)."""
    return f'"{event_type}"'


@dataclass(slots=True)
class Endpoint:
    id: str
    owner: str  # keyed fingerprint of the token that registered it
    url: str
    events: tuple[str, ...]
    project_id: str | None
    description: str
    enabled: bool
    secret: str = field(repr=False)
    created_at: float
    updated_at: float
    # The secret before the last rotation, signing beside the new one until then.
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: float | None = None
    failing_since: float | None = None  # first failed attempt since the last success
    disabled_reason: str | None = None

    def signing_keys(self, now: float) -> list[str]:
        keys = [self.secret]
        if self.previous_secret and self.previous_until and now < self.previous_until:
            keys.append(self.previous_secret)
        return keys


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # to be attempted (again) at next_attempt_at
    DELIVERED = "delivered"  # a 2xx came back
    FAILED = "failed"  # retries used up, 410, or the endpoint gone


@dataclass(slots=True)
class Delivery:
    id: str  # the message id (webhook-id): the same for every attempt
    webhook_id: str
    execution_id: str | None  # None for a test event
    event_type: str
    event_at: float
    status: DeliveryStatus
    created_at: float
    attempts: int = 0
    next_attempt_at: float | None = None
    last_attempt_at: float | None = None
    last_status: int | None = None  # HTTP status of the last attempt (None: no reply)
    last_latency_ms: float | None = None
    last_response: str | None = None  # the first 1 KB of the last reply's body
    last_error: str | None = None
    delivered_at: float | None = None
    body: bytes | None = None  # fixed at the first attempt: every attempt sends the same


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to."""

    status: int | None  # HTTP status; None when no reply came
    latency_ms: float
    response: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410
