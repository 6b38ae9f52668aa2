"""Reading and validating the compat request: Authorization and the JSON body."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request

from rpa_gateway import json_rules
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.executions import ExecutionRequest, parse_event_id, request_hash


class ExecBody(BaseModel):
    """The body astron-agent's RPA node sends; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    # The pattern tells the OpenAPI document "not blank"; the validator says it in words.
    project_id: str = Field(min_length=1, max_length=256, json_schema_extra={"pattern": r"\S"})
    sid: str | None = Field(default=None, max_length=256)
    exec_position: str = Field(default="EXECUTOR", max_length=64)
    params: dict[str, Any] | None = None
    version: int | None = Field(default=None, ge=0, le=2**31 - 1)
    phone_number: str | None = Field(default=None, max_length=64)

    @field_validator("project_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def request_hash(self) -> str:
        """Identifies the request as sent, to tell a replay from a different body."""
        return request_hash(
            self.project_id,
            self.params,
            sid=self.sid,
            exec_position=self.exec_position,
            version=self.version,
            phone_number=self.phone_number,
        )

    def to_request(self, trace_parent: str | None = None) -> ExecutionRequest:
        return ExecutionRequest(
            project_id=self.project_id,
            sid=self.sid or uuid.uuid4().hex,
            params=self.params or {},
            exec_position=self.exec_position or "EXECUTOR",
            version=self.version,
            phone_number=self.phone_number,
            trace_parent=trace_parent,
        )


_SID_NOTE = "rpa_gateway.sid"
_MAX_SID_NOTED = 256

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_parent(request: Request) -> str | None:
    """The caller's W3C ``traceparent``, when well formed (anything else is ignored)."""
    value = request.headers.get("traceparent", "").strip().lower()
    return value if _TRACEPARENT.match(value) else None


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise RequestRejected(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters"
        )
    return key


def last_event_id(request: Request) -> tuple[str, int] | None:
    """The resume cursor from ``Last-Event-ID`` (or ``?last_event_id=``), if any."""
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if value is None or not value.strip():
        return None
    cursor = parse_event_id(value)
    if cursor is None:
        raise RequestRejected(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be of the form <execution id>:<sequence>",
        )
    return cursor


async def read_json_object(request: Request, limit: int, seconds: float = 30.0) -> dict[str, Any]:
    """The body as a JSON object.

    Its ``sid`` is noted in the scope for a refusal's frame (:func:`noted_sid`); the
    note exists from the moment reading starts, so a refusal never reads twice.
    """
    request.scope[_SID_NOTE] = None
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise RequestRejected(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {content_type[:80]!r}",
            ["Content-Type"],
        )
    raw = await read_bounded(request, limit, seconds)
    if not raw.strip():
        raise RequestRejected(400, "invalid_body", "request body is empty; send a JSON object")
    try:
        decoded = json_rules.decode(raw)
    except json_rules.JsonRefused as exc:
        raise RequestRejected(400, "invalid_json", str(exc)) from None
    if not isinstance(decoded, dict):
        raise RequestRejected(422, "invalid_body", "request body must be a JSON object")
    sid = decoded.get("sid")
    if isinstance(sid, str) and len(sid) <= _MAX_SID_NOTED:  # json_rules: encodable
        request.scope[_SID_NOTE] = sid
    return decoded


async def read_bounded(request: Request, limit: int, seconds: float) -> bytes:
    """The body: 413 beyond ``limit`` bytes, 408 when it takes longer than ``seconds`` (a
    body trickling in must not hold a connection).  Raises RequestRejected."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRejected(
            408, "request_timeout", f"the request body did not arrive within {seconds:g} s"
        ) from None
    return b"".join(chunks)


def is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def body_was_read(request: Request) -> bool:
    return _SID_NOTE in request.scope


def noted_sid(request: Request) -> str | None:
    """The ``sid`` of the body read so far, when it was a string of sane length."""
    sid: str | None = request.scope.get(_SID_NOTE)
    return sid


def parse_exec_body(payload: dict[str, Any]) -> ExecBody:
    try:
        return ExecBody.model_validate(payload)
    except ValidationError as exc:
        problems = []
        fields = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "body"
            fields.append(field)
            problems.append(f"{field}: {str(error['msg']).removeprefix('Value error, ')}")
        raise RequestRejected(422, "invalid_body", "; ".join(problems), fields) from None


def _too_large(limit: int) -> RequestRejected:
    return RequestRejected(
        413, "body_too_large", f"request body is larger than {limit} bytes (RPA_MAX_BODY_BYTES)"
    )
