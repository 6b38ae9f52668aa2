"""HTTP limits against hostile clients: header size, idle sockets, connection count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rpa_gateway.api.edge import Edge
from rpa_gateway.event_stream import EventStreamResponse
from rpa_gateway.http_limits import HttpLimits, LimitedHttpToolsProtocol
from tests.astron_node import NodeFailed, node_call
from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.gateway_process import GatewayProcess
from tests.local_projects import rss_kb

T = TypeVar("T")


def raw(gateway: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.settimeout(10)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return reply


def pings(gateway: GatewayProcess) -> bool:
    try:
        return httpx.get(gateway.base_url + "/rpa/v1/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_huge_headers_get_431_and_cost_no_memory(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    before = rss_kb(gateway.process.pid)
    held = []
    for _ in range(10):  # ten clients, each starting a 32 MB header line, all kept open
        sock = raw(gateway)
        sock.settimeout(2)  # a service that buffers it all would stop reading at some point
        try:
            sock.sendall(b"POST /rpa/v1/exec HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(512):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # the service answered and closed: the rest is not read
        held.append(sock)
    # Measured while every connection is still open on this side: what the service holds
    # for them now, not what it gave back after they closed.
    grown_mb = (rss_kb(gateway.process.pid) - before) / 1024
    replies = []
    for sock in held:
        sock.settimeout(10)
        replies.append(read_reply(sock))
        sock.close()
    assert grown_mb < 40, f"grew {grown_mb:.0f} MB"
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 431 ")
        assert b'data: {"code":55001' in reply and b"larger than 65536 bytes" in reply
    assert pings(gateway)


def test_a_socket_that_sends_no_complete_request_is_closed(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(RPA_HEADER_TIMEOUT="1")
    idle, slow = raw(gateway), raw(gateway)
    slow.sendall(b"GET /rpa/v1/ping HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    started = time.monotonic()
    reply = read_reply(slow)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert b"no complete request within 1 s" in reply
    # One that sent nothing is closed unanswered: a request it sent later would read a 408
    # written before it as its answer (a success to astron-agent's node, if JSON).
    assert read_reply(idle) == b""
    assert time.monotonic() - started < 5
    # Idle after a response, a kept-alive connection is closed by the keep-alive timeout (5 s).
    kept = raw(gateway)
    kept.sendall(b"GET /rpa/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    assert read_reply(kept).count(b"HTTP/1.1 200 ") == 1
    assert time.monotonic() - started < 8


def test_idle_sockets_cannot_starve_the_service_of_file_descriptors(
    tmp_path: Path, fake: object
) -> None:
    gateway = GatewayProcess({**FAST, "RPA_HEADER_TIMEOUT": "2"}, tmp_path)
    gateway.launcher = ["prlimit", "--nofile=1024:1024", "--"]
    gateway.start()
    held: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", gateway.port))
            held.append(sock)
        deadline = time.monotonic() + 20
        while not pings(gateway):
            assert time.monotonic() < deadline, "the service never answered again"
        assert pings(gateway)
    finally:
        for sock in held:
            sock.close()
        gateway.stop()


def test_beyond_the_connection_cap_requests_get_a_clear_503(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(upstream=False, RPA_MAX_CONNECTIONS="5")
    held = [raw(gateway) for _ in range(6)]
    try:
        refused = httpx.get(gateway.base_url + "/rpa/v1/ping")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "too_many_connections"
        with pytest.raises(NodeFailed, match="Service unavailable: the service has too many"):
            node_call(gateway.base_url, "t", {"project_id": "hello"})
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while not pings(gateway):
        assert time.monotonic() < deadline


def test_the_connection_is_closed_after_a_413(gateway: GatewayProcess) -> None:
    sock = raw(gateway)
    sock.sendall(
        b"POST /rpa/v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{"
    )
    reply = read_reply(sock)  # returns only once the service has closed the connection
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in reply.lower()


def head_of(size: int, project: str, body: bytes) -> bytes:
    """A request head of exactly ``size`` bytes (request line, headers, blank line) that
    creates an execution of ``project``."""
    lines = [
        b"POST /rpa/v1/executions HTTP/1.1",
        b"Host: x",
        b"Authorization: Bearer head-limit-caller",
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        b"Connection: close",  # the reply is read to the close: not a keep-alive's 5 s
    ]
    fixed = sum(len(line) + 2 for line in lines) + len(b"X-Pad: \r\n") + 2
    lines.append(b"X-Pad: " + b"p" * (size - fixed))
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    assert len(head) == size
    return head


@pytest.mark.parametrize("pieces", [1, 2, 5], ids=["whole", "in-two", "in-five"])
def test_a_head_over_the_limit_is_431_however_it_arrives(
    start_gateway: GatewayFactory, pieces: int
) -> None:
    gateway = start_gateway(RPA_MAX_HEADER_BYTES="2048")
    outcomes = {}
    for size in (2048, 2049, 3000):
        project = f"head-{size}-{pieces}-{time.time_ns()}"
        body = f'{{"project_id": "{project}"}}'.encode()
        request = head_of(size, project, body) + body
        sock = raw(gateway)
        step = -(-len(request) // pieces)
        for start in range(0, len(request), step):
            sock.sendall(request[start : start + step])
            time.sleep(0.05)  # separate reads on the server
        reply = read_reply(sock)
        sock.close()
        listed = httpx.get(
            gateway.base_url + "/rpa/v1/executions",
            params={"project_id": project},
            headers={"Authorization": "Bearer head-limit-caller"},
            timeout=10,
        ).json()["items"]
        outcomes[size] = (reply.split(b" ", 2)[1], len(listed))
    assert outcomes == {2048: (b"202", 1), 2049: (b"431", 0), 3000: (b"431", 0)}


def test_an_http_1_0_client_gets_its_stream_close_delimited_not_chunked(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    """HTTP/1.0 has no chunked coding: a stream's body is the events themselves, ended by
    the close (a chunk size line would be read as part of the body)."""
    pid = new_project_id()
    fake.script(
        pid,
        # Polled at most every 0.2 s: a second and more of pings (every 0.2 s) first.
        steps=[{"status": "PENDING"}] * 8 + [{"status": "COMPLETED", "result": {"data": {"n": 7}}}],
    )
    body = json.dumps({"project_id": pid, "sid": "old-client"}).encode()
    sock = raw(gateway)
    sock.sendall(
        b"POST /rpa/v1/exec HTTP/1.0\r\nAuthorization: t-secret\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    reply = read_reply(sock)  # to the close: that is where an HTTP/1.0 body ends
    head, _, stream = reply.partition(b"\r\n\r\n")
    headers = head.lower().split(b"\r\n")
    assert headers[0].startswith(b"http/1.1 200 "), head
    assert not any(h.startswith(b"transfer-encoding") for h in headers), head
    assert b"connection: close" in headers
    frames = [json.loads(line[5:]) for line in stream.split(b"\n") if line.startswith(b"data:")]
    assert [(f["code"], f["data"]) for f in frames] == [(0, {"n": 7})], stream
    lines = [line for line in stream.split(b"\n") if line]
    assert all(line.startswith((b":", b"data:", b"id:", b"retry:")) for line in lines), stream
    assert b": ping" in lines, "pings reach an HTTP/1.0 stream too"
    # A JSON answer keeps its length.
    sock = raw(gateway)
    sock.sendall(b"GET /rpa/v1/ping HTTP/1.0\r\n\r\n")
    assert b"content-length: " in read_reply(sock).lower()


def test_a_head_sent_in_time_is_served_when_the_loop_reads_it_late() -> None:
    """An overloaded loop runs its due timers before it polls its sockets again: a head
    that arrived in time but was not read yet must not get the 408 (sent before the
    request line is read, the 408 is JSON, which astron-agent's node reads as a success).

    In process, on uvloop as the service runs: one connection's read holds the loop (as a
    long batch of reads does under load) while another sends its whole request, past the
    head timeout; when the hold ends, the due deadline runs before the next poll."""
    holding = threading.Event()

    class Holding(LimitedHttpToolsProtocol):
        def data_received(self, data: bytes) -> None:
            if data == b"HOLD":
                holding.set()
                time.sleep(self._limits.header_timeout * 3)
                return
            super().data_received(data)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"6")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"served"})

    limits = HttpLimits(max_header_bytes=8192, header_timeout=0.5, max_connections=10)
    with serving_in_a_thread(app, Holding.with_limits(limits)) as (_, port):
        client = socket.create_connection(("127.0.0.1", port))
        holder = socket.create_connection(("127.0.0.1", port))
        with client, holder:
            client.settimeout(10)
            # Served after both were accepted (one queue of connections, taken in order).
            with socket.create_connection(("127.0.0.1", port)) as warm:
                warm.settimeout(10)
                warm.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert read_reply_of(warm).startswith(b"HTTP/1.1 200 ")
            holder.sendall(b"HOLD")
            assert holding.wait(10)
            client.sendall(b"POST /rpa/v1/exec HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            reply = read_reply_of(client)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:120]
        assert reply.endswith(b"served")


def read_reply_of(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
            if reply.endswith(b"served"):  # else until the server closes (a refusal)
                break
    except ConnectionResetError:  # a refusal closing with the request unread
        pass
    return reply


def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess) -> None:
    sock = raw(gateway)
    sock.sendall(  # sent at once: the second and third wait in the connection's queue
        b"GET /rpa/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /rpa/v1/nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        b"DELETE /rpa/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    reply = read_reply(sock)
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", reply) == [b"200", b"404", b"405"], reply[:600]


def test_an_open_stream_costs_less_than_on_uvicorns_own_protocol() -> None:
    """An open stream holds its connection's protocol object for its whole life.  Ours
    adds limits to uvicorn's and must stay smaller: past 30 attributes CPython stops
    sharing an instance dict's keys (1.3 KB more per stream), and uvicorn's empty queue
    for pipelined requests is some 700 bytes."""
    limited = LimitedHttpToolsProtocol.with_limits(
        HttpLimits(max_header_bytes=8192, header_timeout=10, max_connections=10)
    )
    ours = _while_streaming(limited, _stream_in_place, _protocol_bytes)
    uvicorns = _while_streaming(HttpToolsProtocol, _stream_in_place, _protocol_bytes)
    assert ours < uvicorns, f"{ours} bytes per connection, {uvicorns} on uvicorn's own"


def test_an_open_stream_does_not_hold_its_requests_headers() -> None:
    """The caller's token (in its headers) is not kept in memory for a stream's life."""
    limited = LimitedHttpToolsProtocol.with_limits(
        HttpLimits(max_header_bytes=8192, header_timeout=10, max_connections=10)
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            assert (b"authorization", b"Bearer t") in scope["headers"]
            await EventStreamResponse(_open_then_end())(scope, receive, send)

    held = _while_streaming(limited, Edge(app), lambda protocol: list(protocol.headers))
    assert held == []


def _protocol_bytes(protocol: asyncio.Protocol) -> int:
    pipeline = getattr(protocol, "pipeline")  # noqa: B009
    return sys.getsizeof(vars(protocol)) + sys.getsizeof(pipeline)


_released = threading.Event()


async def _open_then_end() -> AsyncGenerator[bytes, None]:
    yield b"open"
    await asyncio.to_thread(_released.wait, 10)


async def _stream_in_place(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    async for chunk in _open_then_end():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _while_streaming(
    protocol: type[asyncio.Protocol],
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    look: Callable[[Any], T],
) -> T:
    """What ``look`` sees of the connection's protocol while it serves an open stream."""
    _released.clear()
    try:
        with serving_in_a_thread(app, protocol) as (server, port):
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.settimeout(10)
                client.sendall(
                    b"POST /rpa/v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                    b"X-Real-IP: 10.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
                )
                received = b""
                while b"open" not in received:
                    chunk = client.recv(65536)
                    assert chunk, received
                    received += chunk
                (connection,) = server.server_state.connections
                seen = look(connection)
                _released.set()
            return seen
    finally:
        _released.set()


@contextlib.contextmanager
def serving_in_a_thread(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], protocol: type[asyncio.Protocol]
) -> Iterator[tuple[uvicorn.Server, int]]:
    """uvicorn on uvloop, as the service runs, serving ``app`` with ``protocol`` in a thread
    of this process (so a test can reach into its connections); the server and its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=protocol,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield server, port
    finally:
        server.should_exit = True
        thread.join(10)
