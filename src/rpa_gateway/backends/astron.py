"""The ``astron`` backend: the astron-rpa (Xiaowu) RPA OpenAPI over one pooled client.

It speaks two dialects of the platform, chosen per caller by ``contract``: the legacy
routes (``legacy``) and the managed execution contract (``managed``); ``replies`` reads
what either sends back.  This module holds the requests and the transport.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp.resolver import DefaultResolver

from rpa_gateway import __version__
from rpa_gateway.backends import legacy, managed, replies
from rpa_gateway.backends.base import (
    CancelReply,
    CreateFailed,
    ProjectInfo,
    QueryFault,
    TaskInfo,
    TaskState,
    TaskUpdate,
)
from rpa_gateway.backends.contract import ContractMode, ContractProbe, Dialect, Discovery
from rpa_gateway.backends.json_limits import check_params
from rpa_gateway.backends.replies import SUCCESS
from rpa_gateway.backends.request_budget import RequestBudget
from rpa_gateway.executions import ExecutionRequest, JsonObject
from rpa_gateway.http_client import (
    CachingResolver,
    ConnectFailed,
    ConnectTimedOut,
    HttpClient,
    ReplyError,
    ReplyTooLarge,
)
from rpa_gateway.json_rules import decode_reply
from rpa_gateway.telemetry.calls import NO_CALLS, Call, Calls

log = logging.getLogger(__name__)

CREATE_ROUTE = "/workflows/execute-async"
DISCOVERY_ROUTE = "/workflows/integration"
CONTRACT_QUERY = "contract=1"
# Replies to a managed create that say nothing of whether the platform took it: the
# create is sent again, byte for byte, under the same idempotency key.
_UNCERTAIN_STATUSES = frozenset({408, 425, 429})
# A reply longer than this is refused, not read: no platform reply is near it.
MAX_REPLY_BYTES = 64 * 1024 * 1024
USER_AGENT = f"rpa-gateway/{__version__}"


class AstronBackend:
    name = "astron"

    def __init__(
        self,
        *,
        create_url: str,
        query_url: str,
        cancel_url: str = "",
        base_url: str = "",
        contract: ContractMode = "auto",
        probe_ttl: float = 30.0,
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
        self._base_url = (base_url or _base_of(create_url)).rstrip("/")
        self.contract_mode = contract
        self._probe = ContractProbe(self.fetch_integration, contract, ready_ttl=probe_ttl)
        # The caller's token travels in a header only; no cookie is kept, no proxy used.
        self._client = HttpClient(
            CachingResolver(DefaultResolver(), seconds=300.0),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            idle_per_origin=max_connections,
            idle_in_all=max_connections,
            idle_seconds=keepalive_timeout,
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

    async def prepare(
        self, execution_id: str, request: ExecutionRequest, token: str, seconds_left: float
    ) -> str | None:
        """The managed create's body when the platform offers this caller the contract (a
        managed field never goes to one that has not: older builds drop or refuse them)."""
        if not self._create_url:
            return None
        discovery = await self.discover(token)
        if discovery.dialect is not Dialect.MANAGED:
            return None
        if discovery.json_limits is not None:
            check_params(request.params, discovery.json_limits)
        return managed.create_body(execution_id, request, seconds_left)

    def watch(self, task_id: str) -> AsyncIterator[TaskUpdate]:
        raise NotImplementedError("the RPA OpenAPI is polled, it does not push")

    async def start(self, request: ExecutionRequest, token: str) -> str:
        if not self._create_url:
            raise CreateFailed("XIAOWU_RPA_TASK_CREATE_URL is not configured")
        if request.managed_body is not None:
            return await self._start_managed(request.managed_body, token)
        return await self._start_legacy(request, token)

    async def _start_legacy(self, request: ExecutionRequest, token: str) -> str:
        body = legacy.create_body(request)
        with self._calls.call("create") as call:
            try:
                status, raw = await self._exchange("POST", self._create_url, token, call, body)
            except _TransportError as exc:
                raise CreateFailed(exc.detail, retryable=exc.never_sent) from None
            envelope = replies.envelope(status, raw, token)
            if isinstance(envelope, str):
                call.failed("refused" if status == 401 else "bad_reply")
                raise CreateFailed(_rejected_key(envelope) if status == 401 else envelope)
            data = envelope.get("data")
            execution_id = data.get("executionId") if isinstance(data, dict) else None
            if (
                envelope.get("code") != SUCCESS
                or not isinstance(execution_id, str)
                or not execution_id
            ):
                call.failed("refused")
                if status == 401:
                    raise CreateFailed(
                        _rejected_key(replies.upstream_message(status, envelope, token))
                    )
                raise CreateFailed(replies.upstream_message(status, envelope, token))
            return execution_id

    async def _start_managed(self, body: str, token: str) -> str:
        """One send of a managed create.  A reply that does not say what became of it
        raises CreateFailed(idempotent=True): the same body is sent again."""
        url = _with_query(self._create_url, CONTRACT_QUERY)
        with self._calls.call("create") as call:
            try:
                status, raw = await self._exchange(
                    "POST", url, token, call, data=body.encode("utf-8")
                )
            except _TransportError as exc:
                raise CreateFailed(_repeated(exc.detail), idempotent=True) from None
            try:
                reply = decode_reply(raw)
            except ValueError:
                reply = None
            execution_id = _created_id(status, reply)
            if execution_id is not None:
                return execution_id
            call.failed("refused")
            found = managed.refusal(reply)
            if found is not None and found.code == "CLIENT_PROTOCOL_UNSUPPORTED":
                raise CreateFailed(
                    "the RPA client of this account does not speak the managed protocol"
                    " (CLIENT_PROTOCOL_UNSUPPORTED)",
                    legacy_only=True,
                )
            if found is not None and found.code == "IDEMPOTENCY_CONFLICT":
                raise CreateFailed(
                    "the RPA platform holds another request under this execution's"
                    " idempotency key (IDEMPOTENCY_CONFLICT); the create body sent again"
                    " must have changed",
                    bug=True,
                )
            if found is not None:
                raise CreateFailed(replies.clip(managed.refusal_detail(found), token))
            if status == 401:
                raise CreateFailed(_rejected_key("HTTP 401"))
            if status >= 500 or status < 300 or status in _UNCERTAIN_STATUSES:
                envelope = replies.envelope(status, raw, token)
                what = (
                    envelope
                    if isinstance(envelope, str)
                    else replies.upstream_message(status, envelope, token)
                )
                raise CreateFailed(_repeated(what), idempotent=True)
            envelope = replies.envelope(status, raw, token)
            raise CreateFailed(envelope if isinstance(envelope, str) else f"HTTP {status}")

    @property
    def create_url(self) -> str:
        return self._create_url

    @property
    def query_url(self) -> str:
        return self._query_url

    async def answer(self, method: str, url: str, token: str) -> tuple[int, dict[str, str], bytes]:
        """One request as a diagnosis makes it: (status, headers, body); a transport
        failure is status 0 with the reason as the body."""
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        try:
            reply = await self._client.request(
                method,
                url,
                headers,
                read_limit=MAX_REPLY_BYTES,
                resend_stale=method == "GET",
                keep_headers=True,
            )
        except TimeoutError:
            return 0, {}, b"timed out"
        except (OSError, ValueError) as exc:
            return 0, {}, (str(exc) or type(exc).__name__).encode()
        return reply.status, dict(reply.headers), reply.body

    async def discover(self, token: str) -> Discovery:
        """The dialect this caller's executions use now (kept per caller, see contract)."""
        return await self._probe.discover(token)

    @property
    def discovery_url(self) -> str:
        """``GET {base}/workflows/integration``: ``{base}`` is RPA_UPSTREAM_BASE_URL, or the
        create URL less ``/workflows/execute-async``; empty when it is neither."""
        return f"{self._base_url}{DISCOVERY_ROUTE}" if self._base_url else ""

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

    async def status(self, task_id: str, token: str, *, managed: bool = False) -> TaskState:
        if managed:
            return await self._snapshot(task_id, token)
        url = f"{self._query_url}/{quote(task_id, safe='')}"
        with self._calls.call("query") as call:
            try:
                status, raw = await self._exchange("GET", url, token, call)
            except _TransportError as exc:
                raise QueryFault(exc.detail) from None
            envelope = replies.envelope(status, raw, token)
            if isinstance(envelope, str):
                call.failed("bad_reply")
                raise QueryFault(envelope)
            if envelope.get("code") != SUCCESS:
                call.failed("refused")
                raise QueryFault(replies.upstream_message(status, envelope, token))
            data = envelope.get("data")
            execution = data.get("execution") if isinstance(data, dict) else None
            if not isinstance(execution, dict) or not isinstance(execution.get("status"), str):
                call.failed("bad_reply")
                raise QueryFault("reply has no data.execution.status")
            return legacy.task_state(execution, token)

    async def _snapshot(self, task_id: str, token: str) -> TaskState:
        url = f"{self._query_url}/{quote(task_id, safe='')}?{CONTRACT_QUERY}"
        with self._calls.call("query") as call:
            try:
                status, raw = await self._exchange("GET", url, token, call)
            except _TransportError as exc:
                raise QueryFault(exc.detail) from None
            envelope = replies.envelope(status, raw, token)
            data = envelope.get("data") if isinstance(envelope, dict) else None
            snapshot = data.get("snapshot") if isinstance(data, dict) else None
            if isinstance(snapshot, dict) and isinstance(snapshot.get("status"), str):
                return _scrubbed(managed.snapshot_state(snapshot), token)
            call.failed("refused" if status >= 400 else "bad_reply")
            found = managed.refusal(replies.decode_or_none(raw))
            if found is not None:
                raise QueryFault(f"the RPA platform answered {found.code} (HTTP {status})")
            if status == 401:
                raise QueryFault(_rejected_key("HTTP 401"))
            if isinstance(envelope, str):
                raise QueryFault(envelope)
            if envelope.get("code") != SUCCESS:
                raise QueryFault(replies.upstream_message(status, envelope, token))
            raise QueryFault("reply has no data.snapshot.status")

    async def cancel(self, task_id: str, token: str, *, managed: bool = False) -> CancelReply:
        if managed:
            return await self._cancel_managed(task_id, token)
        stopped = await self._cancel_legacy(task_id, token)
        return CancelReply.STOPPED if stopped else CancelReply.FAILED

    async def _cancel_managed(self, task_id: str, token: str) -> CancelReply:
        """``POST {base}/executions/{id}/cancel``: it records the intent; the run's
        snapshot says when the robot stopped.  (Never the legacy ``stop-current``: it stops
        whatever the account's client runs.)"""
        if not self._base_url:
            return CancelReply.FAILED
        url = f"{self._base_url}/executions/{quote(task_id, safe='')}/cancel"
        with self._calls.call("cancel") as call:
            try:
                status, raw = await self._exchange("POST", url, token, call)
            except _TransportError as exc:
                log.warning("cancel request failed: %s", exc.detail)
                return CancelReply.FAILED
            reply = replies.decode_or_none(raw)
            if status == 200 and isinstance(reply, dict) and reply.get("code") == SUCCESS:
                return CancelReply.REQUESTED
            call.failed("refused")
            found = managed.refusal(reply)
            if found is not None and found.code == "CANCEL_UNSUPPORTED":
                return CancelReply.UNSUPPORTED
            log.warning(
                "cancel refused by the RPA platform: HTTP %s%s",
                status,
                f" ({found.code})" if found is not None else "",
            )
            return CancelReply.FAILED

    async def _cancel_legacy(self, task_id: str, token: str) -> bool:
        if not self._cancel_url:
            return False
        url = self._cancel_url.replace("{execution_id}", quote(task_id, safe=""))
        with self._calls.call("cancel") as call:
            try:
                status, raw = await self._exchange("POST", url, token, call)
            except _TransportError as exc:
                log.warning("cancel request failed: %s", exc.detail)
                return False
            envelope = replies.envelope(status, raw, token)
            accepted = not isinstance(envelope, str) and envelope.get("code") == SUCCESS
            if not accepted:
                call.failed("refused")
                log.warning("cancel refused by the RPA platform: HTTP %s", status)
            return accepted

    async def _exchange(
        self,
        method: str,
        url: str,
        token: str,
        call: Call,
        body: JsonObject | None = None,
        *,
        data: bytes | None = None,
    ) -> tuple[int, bytes]:
        """One request and its whole reply; transport failures become _TransportError.
        ``data``: a JSON body sent exactly as given.  Only a GET is sent again when a kept
        connection turns out closed: a create may have been read by the platform."""
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **call.headers}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if data is not None:
            headers["Content-Type"] = "application/json"
        await self._budget.acquire()
        try:
            reply = await self._client.request(
                method, url, headers, data, read_limit=MAX_REPLY_BYTES, resend_stale=method == "GET"
            )
        except ConnectTimedOut:
            call.failed("connect")
            raise _TransportError(
                "timed out connecting to the RPA platform", never_sent=True
            ) from None
        except ConnectFailed as exc:
            call.failed("connect")
            raise _TransportError(
                f"cannot connect to the RPA platform: {exc.strerror or exc}", never_sent=True
            ) from None
        except TimeoutError:
            call.failed("timeout")
            raise _TransportError("timed out waiting for the RPA platform's reply") from None
        except ReplyTooLarge:
            call.failed("bad_reply")
            raise _TransportError(
                f"the RPA platform's reply is longer than {MAX_REPLY_BYTES} bytes"
            ) from None
        except ReplyError as exc:
            call.failed("connection")
            raise _TransportError(f"connection failed: {exc}") from None
        except ValueError as exc:  # not an http(s) URL (the settings say which)
            call.failed("connect")
            raise _TransportError(
                f"cannot connect to the RPA platform: {exc}", never_sent=True
            ) from None
        return reply.status, reply.body

    async def aclose(self) -> None:
        await self._client.aclose()


def _rejected_key(reply: str) -> str:
    return f"the platform rejected the key ({reply}); check the caller's RPA API key"


def _base_of(create_url: str) -> str:
    base, found, rest = create_url.partition(CREATE_ROUTE)
    return base if found and not rest else ""


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


def _repeated(detail: str) -> str:
    return f"{detail}; the create is sent again under its idempotency key"


def _created_id(status: int, reply: Any) -> str | None:
    """The execution id of a create the platform took, or None."""
    if status not in (200, 202) or not isinstance(reply, dict) or reply.get("code") != SUCCESS:
        return None
    data = reply.get("data")
    execution_id = data.get("executionId") if isinstance(data, dict) else None
    return execution_id if isinstance(execution_id, str) and execution_id else None


def _scrubbed(state: TaskState, token: str) -> TaskState:
    """A state whose platform strings are kept only with the token scrubbed."""
    return dataclasses.replace(
        state,
        error=replies.clip(state.error, token) if state.error else state.error,
        upstream_code=replies.clip(state.upstream_code, token) if state.upstream_code else None,
    )


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
