"""The service's HTTP/1.1 client: keep-alive connections per origin, replies parsed by
httptools (the C parser uvicorn uses), nothing else.  It carries the platform's requests
(creates, polls, cancels) and webhook attempts.

Why not aiohttp's client: each request here is one small exchange whose reply is read
whole and decoded by the caller, and aiohttp's request machinery (sessions, timers,
tracing, cookie and header handling) costs about twice the CPU of this one per request
(``bench/webhook_client.py``); polls are most of what an execution costs.  URLs are read
by yarl, as aiohttp reads them (IDNA 2008 hosts, the same escaping).  No redirects are
followed, no proxy is used, no cookie is kept; a connection is made only to an address
the resolver gives (the webhooks' one refuses private addresses).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field

import httptools
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

_CHUNK = 64 * 1024
_PREPARED_KEPT = 10_000  # URLs whose request line is kept ready
_SWEEP_EVERY = 5.0  # seconds between looks for idle connections past their time


class ReplyError(ConnectionError):
    """No whole reply came: the connection broke, ended early, or the reply was not HTTP."""


class _Stale(ReplyError):
    """A kept-alive connection ended (or was reset) before any byte of a reply: the server
    had closed it while idle, so the request may be sent again on a new one."""


class ConnectFailed(OSError):
    """No connection could be made (nothing was sent); ``errno``/``strerror`` as the
    failure's."""


class ConnectTimedOut(ConnectFailed, TimeoutError):
    """No connection within the client's ``connect_timeout`` (nothing was sent)."""


class ReplyTooLarge(ReplyError):
    """The reply's body was longer than the request's ``read_limit``: its status and the
    body's first ``read_limit`` bytes (the rest was not read)."""

    def __init__(self, read_limit: int, status: int, body: bytes) -> None:
        super().__init__(f"the reply is longer than {read_limit} bytes")
        self.status = status
        self.body = body


class CachingResolver(AbstractResolver):
    """Answers kept ``seconds`` per (host, port, family): a new connection to a known
    origin does not wait on a lookup (aiohttp's ``ttl_dns_cache``)."""

    def __init__(self, resolver: AbstractResolver, *, seconds: float) -> None:
        self._resolver = resolver
        self._seconds = seconds
        self._found: dict[tuple[str, int, int], tuple[float, list[ResolveResult]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        kept = self._found.get(key)
        now = time.monotonic()
        if kept is not None and kept[0] > now:
            return kept[1]
        found = await self._resolver.resolve(host, port, family)
        if len(self._found) >= _PREPARED_KEPT:
            self._found.clear()
        self._found[key] = (now + self._seconds, found)
        return found

    async def close(self) -> None:
        await self._resolver.close()


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
            self.informational()
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True

    def informational(self) -> None:
        return None


@dataclass(slots=True)
class _ReplyWithHeaders(_Reply):
    """A reply whose headers are kept (httptools calls ``on_header`` only when defined)."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def informational(self) -> None:
        self.headers.clear()


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # only when asked for (``keep_headers``)


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


Origin = tuple[str, str, int]


def _prepare(url: str) -> tuple[Origin, str, str]:
    """Where a URL's requests go, its path and query, and its Host header."""
    parsed = URL(url)
    scheme, host, port = parsed.scheme, parsed.raw_host or "", parsed.port
    if scheme not in ("http", "https") or not host or port is None:
        raise ValueError(f"not an http(s) URL with a host: scheme {scheme!r}")
    named = f"[{host}]" if ":" in host else host
    authority = named if parsed.explicit_port is None else f"{named}:{port}"
    return (scheme, host, port), parsed.raw_path_qs or "/", f"Host: {authority}"


class HttpClient:
    """``connect_timeout``: seconds to make a connection (resolving included);
    ``read_timeout``: seconds from the request's send to its whole reply; None: no bound
    (the caller sets one).  ``max_connections``: requests in flight at once, the rest
    wait; None: no bound.  Idle connections are kept ``idle_seconds`` at most (below the
    servers' keep-alive, so a kept one is rarely found closed), ``idle_per_origin`` to one
    origin, ``idle_in_all`` in all."""

    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_connections: int | None = None,
        idle_per_origin: int = 8,
        idle_in_all: int = 256,
        idle_seconds: float = 30.0,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._idle_per_origin = idle_per_origin
        self._idle_in_all = idle_in_all
        self._idle_seconds = idle_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._swept_at = time.monotonic()
        self._prepared: dict[str, tuple[Origin, str, str]] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        read_limit: int,
        resend_stale: bool,
        keep_headers: bool = False,
    ) -> Reply:
        """One request and its reply, the body read up to ``read_limit`` bytes (more:
        :class:`ReplyTooLarge`).  ``resend_stale``: a kept connection found closed before
        any byte of a reply came is tried once more on a new one (only for requests that
        may be sent twice: the server may have read the first).  Raises
        :class:`ConnectFailed` (nothing sent), :class:`ReplyError`, TimeoutError (the
        read), ValueError (not an http(s) URL)."""
        prepared = self._prepared.get(url)
        if prepared is None:
            if len(self._prepared) >= _PREPARED_KEPT:
                self._prepared.clear()
            prepared = self._prepared[url] = _prepare(url)
        origin, target, host = prepared
        lines = [f"{method} {target} HTTP/1.1", host]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        request = head + body if body else head
        self._sweep()
        if self._slots is None:
            return await self._send(origin, request, read_limit, resend_stale, keep_headers)
        async with self._slots:
            return await self._send(origin, request, read_limit, resend_stale, keep_headers)

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, read_limit: int
    ) -> tuple[int, bytes]:
        """A POST that may be sent twice (a webhook: receivers dedup by its id); (status,
        the body up to ``read_limit`` bytes, the rest not read)."""
        try:
            reply = await self.request(
                "POST", url, headers, body, read_limit=read_limit, resend_stale=True
            )
        except ReplyTooLarge as cut:
            return cut.status, cut.body
        return reply.status, reply.body

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.writer.close()
        self._idle.clear()
        self._idle_count = 0

    async def _send(
        self,
        origin: Origin,
        request: bytes,
        read_limit: int,
        resend_stale: bool,
        keep_headers: bool,
    ) -> Reply:
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, read_limit, keep_headers)
            except _Stale:
                if not resend_stale:
                    raise
        connection = await self._connect(*origin)
        return await self._exchange(origin, connection, request, read_limit, keep_headers)

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
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._open(scheme, host, port)
        except TimeoutError:
            raise ConnectTimedOut(f"no connection to {host}:{port} in time") from None
        except ConnectFailed:
            raise
        except OSError as exc:
            raise ConnectFailed(*exc.args) from exc

    async def _open(self, scheme: str, host: str, port: int) -> _Connection:
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
        self,
        origin: Origin,
        connection: _Connection,
        request: bytes,
        read_limit: int,
        keep_headers: bool,
    ) -> Reply:
        reply = _ReplyWithHeaders(read_limit) if keep_headers else _Reply(read_limit)
        parser = httptools.HttpResponseParser(reply)
        reply.parser = parser
        keep = False
        try:
            # The read timeout bounds the whole reply from the send (None: no bound).
            async with asyncio.timeout(self._read_timeout):
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
            raise ReplyError("the server switched protocols instead of answering") from exc
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
        status = parser.get_status_code()
        if reply.cut:
            raise ReplyTooLarge(read_limit, status, bytes(reply.body))
        headers: tuple[tuple[str, str], ...] = ()
        if isinstance(reply, _ReplyWithHeaders):
            headers = tuple(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in reply.headers
            )
        return Reply(status, bytes(reply.body), headers)
