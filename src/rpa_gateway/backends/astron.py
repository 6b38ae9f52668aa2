"""The ``astron`` backend: the astron-rpa (Xiaowu) RPA OpenAPI over one pooled client.

Replies are ``{"code": "<str>", "msg": str, "data": any}`` envelopes where code
``"0000"`` is success and ``"5001"`` an error even with HTTP 200, so the HTTP
status alone is never trusted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from rpa_gateway.backends.base import (
    CreateFailed,
    ProjectInfo,
    QueryFault,
    TaskInfo,
    TaskPhase,
    TaskState,
    TaskUpdate,
)
from rpa_gateway.backends.request_budget import RequestBudget
from rpa_gateway.backends.run_times import run_seconds
from rpa_gateway.executions import ExecutionRequest, JsonObject
from rpa_gateway.json_rules import JsonRefused, decode_reply
from rpa_gateway.telemetry.calls import NO_CALLS, Call, Calls
from rpa_gateway.telemetry.redaction import redact

log = logging.getLogger(__name__)

SUCCESS = "0000"
CREATE_ROUTE = "/workflows/execute-async"
DISCOVERY_ROUTE = "/workflows/integration"
WORKING_STATUSES = frozenset({"PENDING", "RUNNING"})
_MAX_DETAIL = 300


class AstronBackend:
    name = "astron"

    def __init__(
        self,
        *,
        create_url: str,
        query_url: str,
        cancel_url: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int = 256,
        keepalive_timeout: float = 4.0,
        max_requests_per_second: float = 0.0,
        calls: Calls = NO_CALLS,
    ) -> None:
        self._calls = calls
        self._budget = RequestBudget(max_requests_per_second)
        self._create_url = create_url
        self._query_url = query_url.rstrip("/")
        self._cancel_url = cancel_url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections, keepalive_timeout=keepalive_timeout, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_read=read_timeout
            ),
            # The caller's token travels in a header only; nothing reads cookies back.
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    @property
    def can_cancel(self) -> bool:
        return bool(self._cancel_url)

    @property
    def pushes(self) -> bool:
        return False

    @property
    def runs_here(self) -> bool:
        return False

    def describe(self) -> str:
        return f"RPA OpenAPI at {_where(self._create_url)} (query {_where(self._query_url)})"

    def check(self, request: ExecutionRequest, token: str) -> None:
        return None  # the platform knows its projects; a bad one fails the create (55001)

    def projects(self) -> list[ProjectInfo] | None:
        return None

    def info(self, task_id: str) -> TaskInfo | None:
        return None

    def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        raise NotImplementedError("the RPA OpenAPI is polled, it does not push")

    async def start(self, request: ExecutionRequest, token: str) -> str:
        if not self._create_url:
            raise CreateFailed("XIAOWU_RPA_TASK_CREATE_URL is not configured")
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
        with self._calls.call("create") as call:
            try:
                status, raw = await self._exchange("POST", self._create_url, token, call, body)
            except _TransportError as exc:
                raise CreateFailed(exc.detail, retryable=exc.never_sent) from None
            envelope = _envelope(status, raw, token)
            if isinstance(envelope, str):
                call.failed("bad_reply")
                raise CreateFailed(envelope)
            data = envelope.get("data")
            execution_id = data.get("executionId") if isinstance(data, dict) else None
            if (
                envelope.get("code") != SUCCESS
                or not isinstance(execution_id, str)
                or not execution_id
            ):
                call.failed("refused")
                raise CreateFailed(_upstream_message(status, envelope, token))
            return execution_id

    @property
    def create_url(self) -> str:
        return self._create_url

    @property
    def query_url(self) -> str:
        return self._query_url

    async def answer(self, method: str, url: str, token: str) -> tuple[int, dict[str, str], bytes]:
        """One request as a diagnosis makes it: (status, headers, body); a transport
        failure is status 0 with the reason as the body."""
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._session.request(method, url, headers=headers) as reply:
                return reply.status, dict(reply.headers), await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, {}, str(exc).encode()

    @property
    def discovery_url(self) -> str:
        """``GET {base}/workflows/integration``: ``{base}`` is the create URL less
        ``/workflows/execute-async`` (see ``contract``); empty when it is not that shape."""
        base, found, rest = self._create_url.partition(CREATE_ROUTE)
        return f"{base}{DISCOVERY_ROUTE}" if found and not rest else ""

    async def fetch_integration(self, token: str) -> tuple[int, Any]:
        """The discovery route's reply for this caller: (HTTP status, its JSON or None).
        Raises OSError when no reply came (see ``contract.ContractProbe``)."""
        if not self.discovery_url:
            return 404, None
        with self._calls.call("discover") as call:
            try:
                status, raw = await self._exchange("GET", self.discovery_url, token, call)
            except _TransportError as exc:
                raise OSError(exc.detail) from None
        try:
            return status, decode_reply(raw)
        except ValueError:  # not JSON (a proxy's page): says nothing of the contract
            return status, None

    async def status(self, task_id: str, token: str) -> TaskState:
        url = f"{self._query_url}/{quote(task_id, safe='')}"
        with self._calls.call("query") as call:
            try:
                status, raw = await self._exchange("GET", url, token, call)
            except _TransportError as exc:
                raise QueryFault(exc.detail) from None
            envelope = _envelope(status, raw, token)
            if isinstance(envelope, str):
                call.failed("bad_reply")
                raise QueryFault(envelope)
            if envelope.get("code") != SUCCESS:
                call.failed("refused")
                raise QueryFault(_upstream_message(status, envelope, token))
            data = envelope.get("data")
            execution = data.get("execution") if isinstance(data, dict) else None
            if not isinstance(execution, dict) or not isinstance(execution.get("status"), str):
                call.failed("bad_reply")
                raise QueryFault("reply has no data.execution.status")
            return _task_state(execution, token)

    async def cancel(self, task_id: str, token: str) -> bool:
        if not self._cancel_url:
            return False
        url = self._cancel_url.replace("{execution_id}", quote(task_id, safe=""))
        with self._calls.call("cancel") as call:
            try:
                status, raw = await self._exchange("POST", url, token, call)
            except _TransportError as exc:
                log.warning("cancel request failed: %s", exc.detail)
                return False
            envelope = _envelope(status, raw, token)
            accepted = not isinstance(envelope, str) and envelope.get("code") == SUCCESS
            if not accepted:
                call.failed("refused")
                log.warning("cancel refused by the RPA platform: HTTP %s", status)
            return accepted

    async def _exchange(
        self, method: str, url: str, token: str, call: Call, body: JsonObject | None = None
    ) -> tuple[int, bytes]:
        """One request and its whole reply; transport failures become _TransportError."""
        headers = {"Authorization": f"Bearer {token}", **call.headers}
        await self._budget.acquire()
        try:
            async with self._session.request(method, url, json=body, headers=headers) as reply:
                return reply.status, await reply.read()
        except aiohttp.ClientConnectorError as exc:
            call.failed("connect")
            raise _TransportError(
                f"cannot connect to the RPA platform: {_os_reason(exc)}", never_sent=True
            ) from None
        except aiohttp.ConnectionTimeoutError:
            call.failed("connect")
            raise _TransportError(
                "timed out connecting to the RPA platform", never_sent=True
            ) from None
        except TimeoutError:
            call.failed("timeout")
            raise _TransportError("timed out waiting for the RPA platform's reply") from None
        except aiohttp.ClientError as exc:
            call.failed("connection")
            raise _TransportError(f"connection failed: {_client_error(exc)}") from None

    async def aclose(self) -> None:
        await self._session.close()


def _where(url: str) -> str:
    """scheme://host:port/path of a URL, without credentials or query."""
    if not url:
        return "(unset)"
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class _TransportError(Exception):
    """No usable reply; ``never_sent`` when no connection was ever made."""

    def __init__(self, detail: str, *, never_sent: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.never_sent = never_sent


def _envelope(status: int, raw: bytes, token: str) -> dict[str, Any] | str:
    """The decoded reply, or a one-line reason why it is not a usable envelope."""
    try:
        decoded = decode_reply(raw)
    except JsonRefused as exc:  # valid to Python, not to what its data passes through next
        return f"HTTP {status}: reply cannot be passed on: {exc}"
    except ValueError:
        return f"HTTP {status}: reply is not JSON ({_snippet(raw, token)})"
    if not isinstance(decoded, dict):
        return f"HTTP {status}: reply is not a JSON object"
    if "code" not in decoded and status >= 400:
        return f"HTTP {status}: {_clip(str(decoded.get('detail', decoded)), token)}"
    return decoded


def _upstream_message(status: int, envelope: dict[str, Any], token: str) -> str:
    code, msg = envelope.get("code"), envelope.get("msg")
    if msg:
        return _clip(str(msg), token)
    return f"HTTP {status}, upstream code {code!s}"


def _task_state(execution: dict[str, Any], token: str) -> TaskState:
    """The run's state; strings from the platform are kept only with the token scrubbed."""
    upstream_status = str(execution["status"])
    error = execution.get("error")
    error_text = _clip(str(error), token) if error else None
    if upstream_status == "COMPLETED":
        result = execution.get("result")
        outputs = result.get("data") if isinstance(result, dict) else None
        return TaskState(
            TaskPhase.COMPLETED,
            upstream_status,
            data=_as_object(outputs),
            ran_for=run_seconds(execution.get("start_time"), execution.get("end_time")),
        )
    if upstream_status == "FAILED":
        return TaskState(TaskPhase.FAILED, upstream_status, error=error_text or "robot failed")
    if upstream_status == "CANCELLED":
        return TaskState(TaskPhase.CANCELLED, upstream_status, error=error_text)
    if upstream_status not in WORKING_STATUSES:
        upstream_status = _clip(upstream_status, token)[:40]
        log.warning("unknown upstream status %r, treated as still working", upstream_status)
    return TaskState(TaskPhase.WORKING, upstream_status)


def _as_object(outputs: object) -> JsonObject:
    """The robot's outputs as the dict callers expect (``{}`` when it sent none)."""
    if outputs is None:
        return {}
    if isinstance(outputs, dict):
        return outputs
    return {"value": outputs}


def _client_error(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_reason(exc)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "reply was cut short"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


def _os_reason(exc: aiohttp.ClientOSError) -> str:
    return exc.strerror or type(exc).__name__


def _snippet(raw: bytes, token: str) -> str:
    text = " ".join(redact(raw[:400].decode("utf-8", "replace"), (token,)).split())
    return text[:80] or "empty body"


def _clip(text: str, token: str) -> str:
    """Redacted first, then cut: a cut must never leave a piece of the token behind."""
    text = redact(text, (token,))
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
