"""The service's HTTP/1.1 client (http_client.py) as the platform's requests use it, over
real sockets: each test runs its own server in the test's event loop, scripted byte for
byte.  (Webhook POSTs through it: test_webhook_sender.py.)"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from rpa_gateway.http_client import (
    ConnectFailed,
    ConnectTimedOut,
    HttpClient,
    ReplyError,
    ReplyTooLarge,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    return head + (await reader.readexactly(lengths[0]) if lengths else b"")


class Server:
    """Answers each request with ``reply`` after ``hold`` seconds; ``once_per_connection``:
    a connection's second request is read, then the connection closed unanswered (its
    first reply said keep-alive)."""

    def __init__(
        self, reply: bytes = OK, *, once_per_connection: bool = False, hold: float = 0.0
    ) -> None:
        self.reply, self.once, self.hold = reply, once_per_connection, hold
        self.requests: list[bytes] = []
        self.connections = 0
        self.in_flight = self.most_in_flight = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                request = await read_request(reader)
                self.requests.append(request)
                if self.once and answered:
                    break
                answered += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(self.hold)
                self.in_flight -= 1
                writer.write(self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    def url(self, path: str = "/executions/1") -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}{path}"


def client(**options: object) -> HttpClient:
    return HttpClient(DefaultResolver(), **options)  # type: ignore[arg-type]


def test_a_get_on_a_kept_connection_closed_before_replying_is_sent_again_a_post_is_not() -> None:
    async def scenario() -> None:
        # Each connection answers its first request; a second on it is read and the
        # connection closed without a byte of reply: what a server closing an idle
        # connection just as the request arrives looks like to the client.
        for method, resend, requests_seen in (("GET", True, 3), ("POST", False, 2)):
            async with Server(once_per_connection=True) as server:
                one = client()
                first = await one.request(
                    method, server.url(), {}, b"", read_limit=1024, resend_stale=resend
                )
                assert first.status == 200 and one._idle_count == 1
                if resend:
                    again = await one.request(
                        method, server.url(), {}, b"", read_limit=1024, resend_stale=resend
                    )
                    assert again.status == 200 and server.connections == 2
                else:
                    with pytest.raises(ReplyError):
                        await one.request(
                            method, server.url(), {}, b"", read_limit=1024, resend_stale=resend
                        )
                    assert server.connections == 1, "a create is never sent twice"
                assert len(server.requests) == requests_seen
                await one.aclose()

    asyncio.run(scenario())


def test_a_reply_longer_than_the_limit_is_refused_and_the_connection_dropped() -> None:
    async def scenario() -> None:
        big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
        async with Server(big) as server:
            one = client()
            with pytest.raises(ReplyTooLarge) as cut:
                await one.request("GET", server.url(), {}, read_limit=1000, resend_stale=True)
            assert cut.value.status == 200 and len(cut.value.body) == 1000
            assert one._idle_count == 0, "the rest of the reply is unread: not reused"

    asyncio.run(scenario())


def test_no_more_requests_in_flight_than_the_bound() -> None:
    async def scenario() -> None:
        async with Server(hold=0.2) as server:
            one = client(max_connections=3)
            replies = await asyncio.gather(
                *(
                    one.request("GET", server.url(), {}, read_limit=1024, resend_stale=True)
                    for _ in range(12)
                )
            )
            assert all(reply.status == 200 for reply in replies)
            assert server.most_in_flight == 3
            assert server.connections == 3, "connections are kept and reused"
            await one.aclose()

    asyncio.run(scenario())


class _Hanging(AbstractResolver):
    """A lookup that never answers, scripted: no name server can be made to hang here."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(60)
        return []

    async def close(self) -> None:
        return None


def test_timeouts_say_whether_anything_was_sent() -> None:
    async def scenario() -> None:
        slow = HttpClient(_Hanging(), connect_timeout=0.2)
        with pytest.raises(ConnectTimedOut):
            await slow.request(
                "GET", "http://platform.test/x", {}, read_limit=10, resend_stale=True
            )
        async with Server(hold=5.0) as server:
            one = client(read_timeout=0.2)
            with pytest.raises(TimeoutError) as waited:
                await one.request("GET", server.url(), {}, read_limit=1024, resend_stale=True)
            assert not isinstance(waited.value, ConnectFailed), "it was sent"
        # A closed port: nothing sent.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        with pytest.raises(ConnectFailed) as refused:
            await client().request(
                "GET", f"http://127.0.0.1:{port}/", {}, read_limit=10, resend_stale=True
            )
        assert refused.value.strerror

    asyncio.run(scenario())


def test_the_request_line_headers_and_body_as_sent_and_headers_kept_when_asked() -> None:
    async def scenario() -> None:
        reply = b"HTTP/1.1 200 OK\r\nX-Trace: abc\r\nContent-Length: 2\r\n\r\n{}"
        async with Server(reply) as server:
            one = client()
            got = await one.request(
                "POST",
                server.url("/run?contract=1"),
                {"Authorization": "Bearer t"},
                b'{"a":1}',
                read_limit=1024,
                resend_stale=False,
                keep_headers=True,
            )
            sent = server.requests[0]
            assert sent.startswith(b"POST /run?contract=1 HTTP/1.1\r\nHost: 127.0.0.1:")
            assert b"\r\nAuthorization: Bearer t\r\n" in sent
            assert sent.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
            assert ("X-Trace", "abc") in got.headers and got.body == b"{}"
            bare = await one.request("GET", server.url(), {}, read_limit=1024, resend_stale=True)
            assert bare.headers == () and b"Content-Length" not in server.requests[1]
            await one.aclose()

    asyncio.run(scenario())
