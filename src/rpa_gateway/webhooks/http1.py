"""A small HTTP/1.1 client for webhook POSTs: keep-alive connections per origin, replies
parsed by httptools (the C parser uvicorn uses), nothing else.

Why not the service's aiohttp client: a webhook attempt is one POST whose reply is read
to a bound and mostly thrown away, and aiohttp's request machinery (sessions, timers,
tracing, cookie and header handling) cost ~80 µs of CPU an attempt against ~25 µs here
(``bench/webhooks.py`` has the per-execution figure).  Redirects are not followed; a
connection is made only to an address the resolver let through (see addresses.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httptools
from aiohttp.abc import AbstractResolver

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 64 * 1024
# Characters a request target keeps as they are (the rest percent-encoded).
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"


class ReplyError(ConnectionError):
    """The connection ended (or broke) before a whole reply head came."""


@dataclass(slots=True)
class _Reply:
    limit: int
    head_done: bool = False
    done: bool = False
    body: bytearray = field(default_factory=bytearray)
    cut: bool = False  # more body than ``limit``: the rest is not read

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        room = self.limit - len(self.body)
        if len(chunk) > room:
            self.cut = True
        self.body += chunk[: max(room, 0)]

    def on_message_complete(self) -> None:
        self.done = True


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


Origin = tuple[str, str, int]
_PREPARED_KEPT = 10_000  # URLs whose request line is kept ready


def _prepare(url: str) -> tuple[Origin, str]:
    """Where a URL's requests go, and their request line and Host header."""
    parts = urlsplit(url)
    scheme = parts.scheme
    host = (parts.hostname or "").encode("idna").decode()
    port = parts.port or _DEFAULT_PORTS[scheme]
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    named = f"[{host}]" if ":" in host else host
    authority = named if port == _DEFAULT_PORTS[scheme] else f"{named}:{port}"
    return (scheme, host, port), f"POST {target} HTTP/1.1\r\nHost: {authority}"


class Http1Client:
    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_per_origin: int = 8,
        idle_seconds: float = 30.0,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle_per_origin = idle_per_origin
        self._idle_seconds = idle_seconds
        self._idle: defaultdict[Origin, list[_Connection]] = defaultdict(list)
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
        scheme, host, port = origin
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, read_limit)
            except ReplyError:
                pass  # an idle connection the server had closed: once more on a new one
        connection = await self._connect(scheme, host, port)
        return await self._exchange(origin, connection, request, read_limit)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.writer.close()
        self._idle.clear()

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - self._idle_seconds
        while idle:
            connection = idle.pop()
            if connection.idle_since > oldest and not connection.writer.is_closing():
                return connection
            connection.writer.close()
        return None

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
        keep = False
        try:
            connection.writer.write(request)
            while not reply.done and not reply.cut:
                data = await connection.reader.read(_CHUNK)
                if not data:
                    if not reply.head_done:
                        raise ReplyError("the connection closed before a reply")
                    break  # a body read to the connection's end
                parser.feed_data(data)
            keep = reply.done and not reply.cut and parser.should_keep_alive()
        except (httptools.HttpParserError, ConnectionError) as exc:
            if isinstance(exc, ReplyError):
                raise
            if not reply.head_done:
                raise ReplyError(f"no valid reply: {exc}") from exc
        finally:
            if keep and len(self._idle[origin]) < self._idle_per_origin:
                connection.idle_since = time.monotonic()
                self._idle[origin].append(connection)
            else:
                connection.writer.close()
        return parser.get_status_code(), bytes(reply.body)
