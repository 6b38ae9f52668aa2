"""A small HTTP/1.1 client for webhook POSTs: keep-alive connections per origin, replies
parsed by httptools (the C parser uvicorn uses), nothing else.

Why not the service's aiohttp client: a webhook attempt is one POST whose reply is read
to a bound and mostly thrown away, and aiohttp's request machinery (sessions, timers,
tracing, cookie and header handling) costs about twice the CPU of this one per attempt
(``bench/webhook_client.py``), which was most of what a delivery cost.  URLs are read by
yarl, as aiohttp reads them (IDNA 2008 hosts, the same escaping).  Redirects are not
followed; a connection is made only to an address the resolver let through (see
addresses.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field

import httptools
from aiohttp.abc import AbstractResolver
from yarl import URL

_CHUNK = 64 * 1024
_PREPARED_KEPT = 10_000  # URLs whose request line is kept ready
_SWEEP_EVERY = 5.0  # seconds between looks for idle connections past their time


class ReplyError(ConnectionError):
    """No whole reply came: the connection broke, ended early, or the reply was not HTTP."""


class _Stale(ReplyError):
    """A kept-alive connection ended (or was reset) before any byte of a reply: the server
    had closed it while idle, so the request may be sent again on a new one."""


@dataclass(slots=True)
class _Reply:
    limit: int
    parser: httptools.HttpResponseParser | None = None
    received: bool = False  # any byte of a reply
    head_done: bool = False
    done: bool = False
    extra: bool = False  # bytes past the reply: the connection is not reused
    keep_alive: bool = False  # read when the reply completes: the parser forgets after
    body: bytearray = field(default_factory=bytearray)
    cut: bool = False  # more body than ``limit``: the rest is not read

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        room = self.limit - len(self.body)
        if len(chunk) > room:
            self.cut = True
        self.body += chunk[: max(room, 0)]

    def on_message_complete(self) -> None:
        assert self.parser is not None
        if 100 <= self.parser.get_status_code() < 200:  # informational: the reply follows
            self.head_done = False
            self.body.clear()
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


Origin = tuple[str, str, int]


def _prepare(url: str) -> tuple[Origin, str]:
    """Where a URL's requests go, and their request line and Host header."""
    parsed = URL(url)
    scheme, host, port = parsed.scheme, parsed.raw_host or "", parsed.port
    if scheme not in ("http", "https") or not host or port is None:
        raise ValueError(f"not an http(s) URL with a host: scheme {scheme!r}")
    named = f"[{host}]" if ":" in host else host
    authority = named if parsed.explicit_port is None else f"{named}:{port}"
    return (scheme, host, port), f"POST {parsed.raw_path_qs or '/'} HTTP/1.1\r\nHost: {authority}"


class Http1Client:
    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_per_origin: int = 8,
        idle_in_all: int = 256,
        idle_seconds: float = 30.0,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle_per_origin = idle_per_origin
        self._idle_in_all = idle_in_all
        self._idle_seconds = idle_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._swept_at = time.monotonic()
        self._prepared: dict[str, tuple[Origin, str]] = {}

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, read_limit: int
    ) -> tuple[int, bytes]:
        """(status, the reply's body up to ``read_limit`` bytes)."""
        prepared = self._prepared.get(url)
        if prepared is None:
            if len(self._prepared) >= _PREPARED_KEPT:
                self._prepared.clear()
            prepared = self._prepared[url] = _prepare(url)
        origin, request_line = prepared
        lines = [request_line]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._sweep()
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, read_limit)
            except _Stale:
                pass  # closed by the server while idle: once more, on a new connection
        connection = await self._connect(*origin)
        return await self._exchange(origin, connection, request, read_limit)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.writer.close()
        self._idle.clear()
        self._idle_count = 0

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - self._idle_seconds
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            usable = not connection.reader.at_eof() and not connection.writer.is_closing()
            if usable and connection.idle_since > oldest:
                return connection
            connection.writer.close()
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._idle_per_origin or self._idle_count >= self._idle_in_all:
            connection.writer.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)
        self._idle_count += 1

    def _sweep(self) -> None:
        """Close connections idle past their time, whatever origin they go to."""
        now = time.monotonic()
        if now - self._swept_at < _SWEEP_EVERY:
            return
        self._swept_at = now
        oldest = now - self._idle_seconds
        for origin in list(self._idle):
            fresh = []
            for connection in self._idle[origin]:
                if connection.idle_since > oldest and not connection.reader.at_eof():
                    fresh.append(connection)
                else:
                    connection.writer.close()
            self._idle_count -= len(self._idle[origin]) - len(fresh)
            if fresh:
                self._idle[origin] = fresh
            else:
                del self._idle[origin]

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        tls = self._ssl if scheme == "https" else None
        found = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        failure: OSError | None = None
        for address in found:
            try:
                reader, writer = await asyncio.open_connection(
                    str(address["host"]),
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            except OSError as exc:
                failure = exc
                continue
            return _Connection(reader, writer)
        raise failure or OSError(f"{host} has no address")

    async def _exchange(
        self, origin: Origin, connection: _Connection, request: bytes, read_limit: int
    ) -> tuple[int, bytes]:
        reply = _Reply(read_limit)
        parser = httptools.HttpResponseParser(reply)
        reply.parser = parser
        keep = False
        try:
            connection.writer.write(request)
            while not reply.done and not reply.cut:
                try:
                    data = await connection.reader.read(_CHUNK)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    if not reply.received:
                        raise _Stale(f"the connection was reset before a reply: {exc}") from exc
                    raise ReplyError(f"the connection broke during the reply: {exc}") from exc
                if not data:
                    if not reply.received:
                        raise _Stale("the connection closed before a reply")
                    if reply.head_done:
                        break  # a body read to the connection's end
                    raise ReplyError("the connection closed in the middle of a reply")
                reply.received = True
                parser.feed_data(data)
            keep = reply.done and reply.keep_alive and not (reply.cut or reply.extra)
        except httptools.HttpParserUpgrade as exc:
            raise ReplyError("the endpoint switched protocols instead of answering") from exc
        except httptools.HttpParserError as exc:
            raise ReplyError(f"the reply is not HTTP/1.1: {exc}") from exc
        finally:
            # The parser holds the reply and the reply the parser: a cycle through an
            # object the collector cannot see into, kept forever unless broken here.
            reply.parser = None
            if keep:
                self._keep(origin, connection)
            else:
                connection.writer.close()
        return parser.get_status_code(), bytes(reply.body)
