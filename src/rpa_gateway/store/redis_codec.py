"""The Redis store's codec: executions and events to and from what Redis holds (hash
fields, JSON strings), and Redis's replies (bytes) read back."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    JsonObject,
    Outcome,
    Status,
    with_result,
)
from rpa_gateway.store.base import StoreError

log = logging.getLogger(__name__)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def epoch_ms(epoch: float) -> int:
    """A time (epoch seconds) as Redis's milliseconds, rounded up."""
    return math.ceil(epoch * 1000)


def ms(seconds: float) -> str:
    """A duration as a milliseconds argument (one at least)."""
    return str(max(1, round(seconds * 1000)))


def as_text(value: object) -> str:
    """A reply as text (replies are bytes: the client does not decode them)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise StoreError(f"unexpected reply from Redis: {type(value).__name__}")


def as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise StoreError(f"unexpected reply from Redis: {type(value).__name__}")


def decoded(rows: Sequence[Any]) -> list[tuple[str, float]]:
    """ZRANGE ... WITHSCORES replies as (member, score)."""
    return [(as_text(member), float(score)) for member, score in rows]


def reservation(value: str) -> tuple[str, float]:
    execution_id, _, reserved_at = value.partition(" ")
    try:
        return execution_id, float(reserved_at)
    except ValueError:
        return execution_id, 0.0


_JSON_CONSTANTS: dict[Any, str] = {None: "null", True: "true", False: "false"}


def pairs(fields: Mapping[str, Any]) -> list[str | bytes]:
    """HSET arguments: every value stored as JSON (numbers and constants, most of them,
    without the encoder's setup: it is a large part of a write's client-side cost)."""
    flat: list[str | bytes] = []
    for name, value in fields.items():
        kind = type(value)
        if kind is int or (kind is float and math.isfinite(value)):
            encoded = repr(value)
        elif kind is bool or value is None:
            encoded = _JSON_CONSTANTS[value]
        else:
            encoded = dumps(value)
        flat += [name, encoded]
    return flat


def event_json(kind: EventKind, data: JsonObject, at: float) -> str:
    return dumps({"kind": kind.value, "data": data, "at": at})


def with_stored_result(event: Event, outcome: bytes | str | None) -> Event:
    """A terminal event with its result put back from the record's ``outcome`` field."""
    if event.kind is not EventKind.TERMINAL or "data" in event.data:
        return event
    result = json.loads(outcome).get("data") if outcome is not None else None
    return with_result(event, result)


def event_from(execution_id: str, seq: int, stored: bytes) -> Event:
    try:
        event = json.loads(stored)
        return Event(execution_id, seq, EventKind(event["kind"]), event["data"], float(event["at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"event {execution_id}:{seq} cannot be read: {exc!r}") from None


def record_fields(execution: Execution) -> dict[str, Any]:
    """A new execution as created.  What never changes travels as one ``spec`` value (a
    script's arguments cost the client per item), and the counters and flags but
    ``create_started`` are left to their defaults when read: what SqliteStore.create
    stores."""
    request = execution.request
    fields: dict[str, Any] = {
        "spec": {
            "owner": execution.owner,
            "request": {"project_id": request.project_id, "sid": request.sid, **request.stored()},
            "created_at": execution.created_at,
            "deadline_at": execution.deadline_at,
            "idempotency_key": execution.idempotency_key,
            "request_hash": execution.request_hash,
        },
        "status": execution.status.value,
        "updated_at": execution.updated_at,
        "last_seq": 1,
    }
    if execution.create_started:
        fields["create_started"] = True
    return fields


def readable(execution_id: str, stored: Mapping[Any, Any]) -> Execution | None:
    """In a batch (listings, takeover scans), a record that cannot be read is left out
    and logged: one bad record must not stop every scan of every replica."""
    try:
        return execution_from(execution_id, stored)
    except StoreError as exc:
        log.error("%s; left out", exc)
        return None


def execution_from(execution_id: str, stored: Mapping[Any, Any]) -> Execution | None:
    if not stored:
        return None
    try:
        return _decode_execution(execution_id, stored)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"execution {execution_id} cannot be read: {exc!r}") from None


def _decode_execution(execution_id: str, stored: Mapping[Any, Any]) -> Execution:
    fields = {bytes(name).decode(): json.loads(value) for name, value in stored.items()}
    fields.update(fields.pop("spec", None) or {})
    request = fields["request"]
    outcome = fields.get("outcome")
    return Execution(
        id=execution_id,
        request=ExecutionRequest.from_stored(request["project_id"], request["sid"], request),
        status=Status(fields["status"]),
        created_at=fields["created_at"],
        updated_at=fields["updated_at"],
        deadline_at=fields["deadline_at"],
        owner=fields["owner"],
        idempotency_key=fields.get("idempotency_key"),
        request_hash=fields.get("request_hash"),
        upstream_id=fields.get("upstream_id"),
        create_started=bool(fields.get("create_started")),
        cancel_requested=bool(fields.get("cancel_requested")),
        finished_at=fields.get("finished_at"),
        outcome=(
            None
            if outcome is None
            else Outcome(
                Status(outcome["status"]), int(outcome["code"]), outcome["message"], outcome["data"]
            )
        ),
        polls=int(fields.get("polls", 0)),
        retries=int(fields.get("retries", 0)),
        last_seq=int(fields["last_seq"]),
        logs=fields.get("logs") or [],
    )
