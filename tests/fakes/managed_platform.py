"""The managed-contract half of the fake platform: body checks, idempotency fingerprints,
refusals and the ``snapshot`` view of a run (see upstream-managed-executions.md).

Pure helpers: the HTTP handlers and all shared state stay in :mod:`tests.fakes.rpa_upstream`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.rpa_upstream import FakeRun

LEGACY_FIELDS = frozenset(
    {"project_id", "params", "exec_position", "version", "phone_number", "recording_config"}
)
MANAGED_FIELDS = LEGACY_FIELDS | {
    "idempotency_key",
    "execution_timeout",
    "profile_revision",
    "capability_class",
}
CAPABILITY_CLASSES = frozenset(
    {
        "json-data",
        "browser-read",
        "service-http-read",
        "service-database-read",
        "service-mail-read",
        "service-openapi-read",
        "service-shared-read",
    }
)
# Create faults of the managed contract; every other fault is one of the old transport faults.
NEW_CREATE_FAULTS = frozenset(
    {
        "lost_reply",
        "client_offline",
        "protocol_unsupported",
        "workflow_not_found",
        "idempotency_conflict",
        "refused",
    }
)
TERMINAL_LEGACY = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
TERMINAL_SNAPSHOT = frozenset({"succeeded", "failed", "cancelled", "timeout"})
FAILED_MESSAGE = "Workflow execution failed"


@dataclass
class Build:
    """What the platform behind one caller key is."""

    managed: bool
    refuses_unknown_fields: bool
    client_state: str = "ready"
    supports_cancel: bool = True


# --- replies ---------------------------------------------------------------------------
def validation_error(loc: list[Any], kind: str = "extra_forbidden") -> web.Response:
    """FastAPI's 422, with the sent value never echoed back."""
    detail = [{"loc": loc, "type": kind, "msg": "Invalid request value"}]
    return web.json_response({"detail": detail}, status=422)


def coded_error(status: int, code: str, message: str | None = None) -> web.Response:
    detail: dict[str, str] = {"code": code}
    if message is not None:
        detail["message"] = message
    return web.json_response({"detail": detail}, status=status)


def client_refusal(state: str, managed_shape: bool) -> web.Response | None:
    """What a start meets for the client's state, or None when it may go ahead."""
    if state == "offline":
        return coded_error(503, "CLIENT_OFFLINE", "The RPA client is offline")
    if state == "unconfirmed":
        return coded_error(
            503, "CLIENT_CAPABILITY_UNCONFIRMED", "The RPA client capability is unconfirmed"
        )
    if state == "unsupported" and managed_shape:
        return coded_error(
            409, "CLIENT_PROTOCOL_UNSUPPORTED", "The RPA client does not support protocol 1"
        )
    return None


def create_refusal(
    create: dict[str, Any], client_state: str, body: dict[str, Any]
) -> web.Response | None:
    """A new create fault or the client's state, in the platform's order."""
    fault = create.get("fault")
    if fault == "workflow_not_found":
        return coded_error(404, "WORKFLOW_NOT_FOUND")
    if fault == "idempotency_conflict":
        return coded_error(403, "IDEMPOTENCY_CONFLICT")
    if fault == "refused":
        return coded_error(403, str(create.get("code", "EXECUTION_NOT_ALLOWED")))
    return client_refusal(effective_client_state(create, client_state), managed_shape(body))


def effective_client_state(create: dict[str, Any], client_state: str) -> str:
    fault = create.get("fault")
    if fault == "client_offline":
        return "offline"
    if fault == "protocol_unsupported":
        return "unsupported"
    return client_state


# --- the start body --------------------------------------------------------------------
def managed_shape(body: dict[str, Any]) -> bool:
    """Whether the start needs a protocol-1 client (of the reference's reasons, the two a
    caller controls with the fake)."""
    return body.get("idempotency_key") is not None or body.get("execution_timeout") is not None


def unknown_field(body: Any, allowed: frozenset[str]) -> web.Response | None:
    if not isinstance(body, dict):
        return validation_error(["body"], "model_attributes_type")
    extra = sorted(name for name in body if name not in allowed)
    return validation_error(["body", extra[0]]) if extra else None


def invalid_managed_body(body: Any) -> web.Response | None:
    """The 422 a managed build gives ``body``, or None."""
    refusal = unknown_field(body, MANAGED_FIELDS)
    if refusal is not None:
        return refusal
    for name, check in _FIELD_CHECKS.items():
        if body.get(name) is not None and not check(body[name]):
            return validation_error(["body", name], "value_error")
    return None


def _strict_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= longest


def _valid_timeout(value: Any) -> bool:
    return _strict_int(value, 1, 86400)


def _valid_key(value: Any) -> bool:
    return _text(value, 200)


def _valid_revision(value: Any) -> bool:
    return _text(value, 100)


def _valid_class(value: Any) -> bool:
    return value in CAPABILITY_CLASSES


_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "execution_timeout": _valid_timeout,
    "idempotency_key": _valid_key,
    "profile_revision": _valid_revision,
    "capability_class": _valid_class,
}


def fingerprint(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "idempotency_key"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- state -----------------------------------------------------------------------------
def settle(run: FakeRun, step: dict[str, Any], cancel_mode: str, now: float) -> dict[str, Any]:
    """The run's legacy state once the platform's own rules apply on top of the script:
    its deadline, a requested cancel, and terminal states never changing.  Updates ``run``
    (the caller holds the fake's lock)."""
    if run.final is not None:
        return run.final
    state = dict(step)
    if state["status"] not in TERMINAL_LEGACY:
        state = _overridden(run, state, cancel_mode, now)
    if run.started_at is None and state["status"] not in ("PENDING", "CANCELLED"):
        run.started_at = run.created_at if run.duration is not None else now
    if state["status"] in TERMINAL_LEGACY:
        run.final = state
        if run.finished_at is None:
            run.finished_at = float(state.get("end_time") or now)
    return state


def _overridden(
    run: FakeRun, state: dict[str, Any], cancel_mode: str, now: float
) -> dict[str, Any]:
    # The platform enforces the deadline on a run it still observes; one whose state it
    # lost ("unknown") it cannot stop.
    observed = state["status"] in ("PENDING", "RUNNING")
    if (
        observed
        and run.execution_timeout is not None
        and now - run.created_at >= run.execution_timeout
    ):
        return {"status": "TIMEOUT", "code": "EXECUTION_TIMEOUT", "error": "Execution timed out"}
    if run.cancel_requested and cancel_mode == "unconfirmed":
        return {
            "status": "UNKNOWN",
            "code": "STOP_UNCONFIRMED",
            "error": "The stop was not confirmed",
        }
    if run.cancel_requested:
        return {"status": "CANCELLED"}
    return state


def sanitized(execution: dict[str, Any]) -> dict[str, Any]:
    """The legacy dict as a managed build shows it: error text never leaks."""
    if execution.get("error") is not None:
        return {**execution, "error": FAILED_MESSAGE}
    return execution


def _status_and_error(run: FakeRun, state: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
    status = state["status"]
    code, message = state.get("code"), state.get("error")
    if status == "PENDING":
        return "accepted", None
    if status == "RUNNING":
        return "running", None
    if status == "COMPLETED":
        return "succeeded", None
    if status == "FAILED":
        return "failed", _error(code or "EXECUTION_FAILED", message or FAILED_MESSAGE)
    if status == "CANCELLED" and run.managed:
        return "cancelled", None
    if status == "CANCELLED":
        return "unknown", _error("EXECUTION_STATE_UNKNOWN", "The execution state is unknown")
    if status == "TIMEOUT":
        return "timeout", _error("EXECUTION_TIMEOUT", message or "Execution timed out")
    if status == "UNKNOWN":
        return "unknown", _error(
            code or "EXECUTION_RESULT_TIMEOUT", message or "Execution state is unknown"
        )
    raise ValueError(f"unknown status {status!r}")


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def snapshot(run: FakeRun, state: dict[str, Any]) -> dict[str, Any]:
    status, error = _status_and_error(run, state)
    terminal = status in TERMINAL_SNAPSHOT
    bound = status != "accepted"
    result = state.get("result") if status == "succeeded" else None
    return {
        "executionId": run.id,
        "projectId": run.project_id,
        "version": run.version,
        "status": status,
        "terminal": terminal,
        "acceptedAt": iso(run.created_at),
        "startedAt": iso(run.started_at) if bound and run.started_at else None,
        "finishedAt": iso(run.finished_at or time.time()) if terminal else None,
        "clientId": "fake-client-1" if bound else None,
        "runId": f"run-{run.id[:12]}" if bound else None,
        "cancelRequested": run.cancel_requested,
        "result": result.get("data") if isinstance(result, dict) else None,
        "error": error,
        "supportsCancel": run.managed and run.supports_cancel and not terminal,
        "resultVisibility": "json",
    }


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()
