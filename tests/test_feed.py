"""``GET /rpa/v1/feed``: a caller's execution changes, live and resumable, over a real socket."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ON_BOTH_STORES
from tests.fakes.rpa_upstream import FakeUpstream
from tests.feed_client import Feed
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create

pytestmark = ON_BOTH_STORES


@pytest.fixture
def feeds() -> Iterator[list[Feed]]:
    opened: list[Feed] = []
    yield opened
    for feed in opened:
        feed.close()


def test_the_feed_brings_the_caller_s_changes_live_and_no_one_else_s(
    gateway: GatewayProcess, fake: FakeUpstream, feeds: list[Feed]
) -> None:
    fake.script("feed-1", steps=[{"status": "RUNNING"}, {"status": "COMPLETED", "result": {}}])
    mine = Feed(gateway.base_url, "feed-owner")
    theirs = Feed(gateway.base_url, "feed-other")
    feeds += [mine, theirs]
    assert mine.status == 200

    created = create(gateway.base_url, {"project_id": "feed-1", "sid": "s-1"}, "feed-owner")
    execution_id = created.json()["id"]
    changes = mine.until_end_of(execution_id)
    statuses = [c["status"] for _, c in changes]
    assert statuses[0] == "ACCEPTED" and statuses[-1] == "SUCCEEDED"
    assert "RUNNING" in statuses
    first, end = changes[0][1], changes[-1][1]
    assert (first["project_id"], first["sid"]) == ("feed-1", "s-1")
    assert end["code"] == 0 and end["finished_at"] == end["updated_at"]
    ids = [int(event_id) for event_id, _ in changes]
    assert ids == [round(c["updated_at"] * 1000) for _, c in changes]
    with pytest.raises(queue.Empty):
        theirs.next(within=0.5)  # another token's feed hears nothing of it

    # Resumed from the first change: the execution's current state comes first.
    resumed = Feed(gateway.base_url, "feed-owner", last_event_id=changes[0][0])
    feeds.append(resumed)
    event_id, replayed = resumed.next()
    assert replayed["id"] == execution_id and replayed["status"] == "SUCCEEDED"
    assert replayed["code"] == 0 and int(event_id) == ids[-1]


def test_a_feed_cursor_that_is_not_a_change_id_is_refused(gateway: GatewayProcess) -> None:
    refused = httpx.get(
        f"{gateway.base_url}/rpa/v1/feed",
        headers={**auth("feed-owner"), "Last-Event-ID": "abc:1"},
        timeout=10,
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_last_event_id"
    assert httpx.get(f"{gateway.base_url}/rpa/v1/feed", timeout=10).status_code == 401


def raw_feed(
    gateway: GatewayProcess, token: str, receive_buffer: int | None = None
) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting: the window stays that small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", gateway.port))
    sock.settimeout(10)
    sock.sendall(
        f"GET /rpa/v1/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return sock


def test_an_idle_feed_is_pinged(gateway: GatewayProcess) -> None:
    """Proxies and clients drop a silent connection: a feed with nothing to say pings
    (every XIAOWU_RPA_PING_INTERVAL, 0.2 s here)."""
    sock = raw_feed(gateway, "feed-pinged")
    received = b""
    deadline = time.monotonic() + 10
    while received.count(b": ping") < 3:
        assert time.monotonic() < deadline, received
        received += sock.recv(4096)
    sock.close()
    assert b"event: change" not in received
