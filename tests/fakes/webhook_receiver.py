"""A webhook receiver over real HTTP that does what a careful one does: it verifies every
message with the ``standardwebhooks`` package (the reference implementation of the spec)
and keeps a dedup table by ``webhook-id``.  Scripted per path: answer 500 to the first
attempts of each message, or 410; and it can go down (port closed) and come back."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.fakes.threaded import ThreadedServer


@dataclass
class Inbox:
    secrets: list[str]  # a message must verify with at least the first
    fail_first: int = 0  # attempts of each message answered 500
    gone: bool = False  # answer 410
    delay: float = 0.0  # seconds before each answer
    in_flight: int = 0  # requests received and not answered yet
    most_in_flight: int = 0
    attempts: Counter[str] = field(default_factory=Counter)  # by webhook-id
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # the dedup table
    duplicates: int = 0  # messages accepted again (a receiver's dedup drops them)
    unverified: int = 0
    verified_by: dict[str, list[int]] = field(default_factory=dict)  # id -> secret indexes
    headers: list[dict[str, str]] = field(default_factory=list)


class WebhookReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inboxes: dict[str, Inbox] = {}
        self.port = 0
        self._server: ThreadedServer | None = None

    def inbox(self, name: str, secret: str, **script: Any) -> Inbox:
        with self._lock:
            self.inboxes[name] = Inbox([secret], **script)
            return self.inboxes[name]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            inbox = self.inboxes.get(request.match_info["name"])
        if inbox is None:
            return web.Response(status=404)
        with self._lock:
            inbox.in_flight += 1
            inbox.most_in_flight = max(inbox.most_in_flight, inbox.in_flight)
        try:
            if inbox.delay:
                await asyncio.sleep(inbox.delay)
            return self._answer(inbox, body, headers)
        finally:
            with self._lock:
                inbox.in_flight -= 1

    def _answer(self, inbox: Inbox, body: bytes, headers: dict[str, str]) -> web.Response:
        with self._lock:
            inbox.headers.append(headers)
            verified = [i for i, s in enumerate(inbox.secrets) if _verifies(s, body, headers)]
            if 0 not in verified:
                inbox.unverified += 1
                return web.Response(status=400, text="signature does not verify")
            message_id = headers["webhook-id"]
            inbox.attempts[message_id] += 1
            inbox.verified_by[message_id] = verified
            if inbox.gone:
                return web.Response(status=410)
            if inbox.attempts[message_id] <= inbox.fail_first:
                return web.Response(status=500, text="try again")
            if message_id in inbox.accepted:
                inbox.duplicates += 1
            else:
                inbox.accepted[message_id] = json.loads(body)
        return web.Response(status=204)

    def start(self, port: int = 0) -> WebhookReceiver:
        self._server = ThreadedServer(self.app(), port)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True
