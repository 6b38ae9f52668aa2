"""Requests and notifications, whichever transport brought them: answered through the
kernel, and cancelled when the client says so.

A client's ``notifications/cancelled`` may reach another process than the one answering
the request it names (nginx spreads requests over replicas): it goes to every process
as a store notice, and the one answering ends that answer.  Cancelling a call ends its
wait, never its robot: the execution goes on (``rpa_cancel`` stops a robot).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.shared.exceptions import MCPError

from rpa_gateway.mcp.call_scope import CallScope
from rpa_gateway.mcp.jsonrpc import Notification, Request, RequestId, error_response, is_id
from rpa_gateway.mcp.jsonrpc import result_response as result_message
from rpa_gateway.mcp.kernel import McpKernel
from rpa_gateway.store.base import Store, StoreError

log = logging.getLogger(__name__)

CANCEL_NOTICE = "mcp-cancel"


class _Answering:
    __slots__ = ("cancelled", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.cancelled = False

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.cancelled = True
            self.task.cancel()


class McpMessages:
    def __init__(self, kernel: McpKernel, store: Store) -> None:
        self._kernel = kernel
        self._store = store
        self._answering: dict[str, _Answering] = {}
        store.add_notice_listener(self._on_notice)

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        return self._kernel.tool_schema(name)

    async def answer(
        self,
        scope: CallScope,
        request: Request,
        conversation: str | None,
        *,
        client_info: Any = None,
        client_capabilities: Any = None,
    ) -> dict[str, Any] | None:
        """The response to the request; ``None`` when its client cancelled it.

        ``conversation`` scopes the client's request ids (its session): a
        ``notifications/cancelled`` naming this id in it ends the answer.  Without one,
        nothing can be cancelled that way (ids are only a client's own within a session).
        """
        with self._track(conversation, request.id) as answering:
            try:
                result = await self._kernel.request(
                    scope,
                    request.id,
                    request.method,
                    request.params,
                    client_info=client_info,
                    client_capabilities=client_capabilities,
                )
            except MCPError as exc:
                return error_response(request.id, exc.code, exc.message, exc.data)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if answering is None or not answering.cancelled or task is None:
                    raise
                task.uncancel()
                log.info("MCP %s %s: cancelled by its client", request.method, request.id)
                return None
        return result_message(request.id, result)

    async def notified(self, notification: Notification, conversation: str | None) -> None:
        """What a notification asks: only ``notifications/cancelled``, within a session."""
        if notification.method != "notifications/cancelled" or conversation is None:
            return
        request_id = (notification.params or {}).get("requestId")
        if not is_id(request_id):
            return  # the spec: an invalid cancel is ignored
        key = _key(conversation, request_id)
        try:
            await self._store.notify(CANCEL_NOTICE, key)
        except StoreError as exc:  # the other processes cannot be told; this one was
            log.warning("MCP cancel of %s reached this process only: %s", request_id, exc)

    @contextmanager
    def _track(
        self, conversation: str | None, request_id: RequestId
    ) -> Iterator[_Answering | None]:
        if conversation is None:
            yield None
            return
        key = _key(conversation, request_id)
        answering = _Answering(asyncio.current_task())
        self._answering[key] = answering
        try:
            yield answering
        finally:
            if self._answering.get(key) is answering:
                del self._answering[key]

    def _on_notice(self, topic: str, key: str) -> None:
        if topic == CANCEL_NOTICE:
            answering = self._answering.get(key)
            if answering is not None:
                answering.cancel()


def _key(conversation: str, request_id: RequestId) -> str:
    return f"{conversation} {json.dumps(request_id)}"
