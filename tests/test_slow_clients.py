"""Clients that stop reading: the service bounds what it holds for them and cuts them
loose with an id to resume from, and they lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx

from rpa_gateway.executions import Event, EventKind
from rpa_gateway.store.hub import CHANGES_BACKLOG, EVENTS_BACKLOG, Hub
from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream
from tests.feed_client import Feed
from tests.gateway_process import GatewayProcess
from tests.native_client import auth
from tests.test_feed import raw_feed


def test_a_feed_whose_client_stops_reading_is_cut_and_resumes_losing_nothing(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    """A client that takes no byte for RPA_STREAM_STALL_SECONDS is disconnected (its
    changes would pile up in the service); reconnecting with the last id it read brings
    every execution's latest state."""
    gateway = start_gateway(
        RPA_STREAM_STALL_SECONDS="1",
        RPA_PROMETHEUS_ENABLE="true",
        RPA_MAX_UNFINISHED_PER_TOKEN="100000",
    )
    token, project = "stalled-feed", f"stall-{time.time_ns()}"
    fake.script(project, steps=[{"status": "COMPLETED", "result": {"data": {"x": "y" * 500}}}])
    sock = raw_feed(gateway, token, receive_buffer=4096)
    # The feed's writes stall once the socket buffers (megabytes, on loopback) are full.
    created: list[str] = []
    deadline = time.monotonic() + 60

    async def create_until_cut() -> None:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one() -> None:
                reply = await client.post(
                    f"{gateway.base_url}/rpa/v1/executions",
                    json={"project_id": project, "sid": "s" * 250},
                    headers=auth(token),
                )
                assert reply.status_code == 202, reply.text
                created.append(reply.json()["id"])

            while "took no byte" not in gateway.log_text():
                assert time.monotonic() < deadline, "the stalled feed was never cut"
                await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(create_until_cut())
    metrics = httpx.get(gateway.base_url + "/metrics", timeout=10).text
    (cut,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("rpa_slow_clients_total{") and 'reason="stalled"' in line
    ]
    assert cut.endswith(" 1.0"), cut

    # What the client had not read yet is still there to read, then the connection ends.
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    sock.close()
    seen: dict[str, str] = {}
    last_id = None
    for block in received.split(b"\n\n"):
        lines = dict(
            line.split(b": ", 1) for line in block.split(b"\n") if line.startswith((b"id", b"data"))
        )
        if b"data" in lines and b"id" in lines:
            try:
                change = json.loads(lines[b"data"])
            except ValueError:
                continue  # the last block may be cut short
            seen[change["id"]] = change["status"]
            last_id = lines[b"id"].decode()
    assert last_id is not None and len(seen) < len(created), "the feed was not behind"
    wait_for_all_finished(gateway, created, token)
    resumed = Feed(gateway.base_url, token, last_event_id=last_id)
    try:
        while not all(seen.get(i) == "SUCCEEDED" for i in created):
            _, change = resumed.next()
            seen[change["id"]] = change["status"]
    finally:
        resumed.close()


def wait_for_all_finished(gateway: GatewayProcess, ids: list[str], token: str) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=gateway.base_url, headers=auth(token), timeout=10) as client:
        for execution_id in ids:
            while client.get(f"/rpa/v1/executions/{execution_id}").json()["status"] != "SUCCEEDED":
                assert time.monotonic() < deadline, execution_id
                time.sleep(0.05)


def test_a_feed_that_falls_behind_holds_no_more_and_ends() -> None:
    """In-process (a backlog of ten thousand changes over a socket takes minutes): what a
    feed's subscription holds is bounded, and past the bound its reader is told to end."""

    async def main() -> None:
        hub = Hub()
        async with hub.subscribe_changes("owner") as feed:
            for n in range(CHANGES_BACKLOG + 500):
                hub.deliver_change("owner", {"id": str(n)})
            assert feed.fell_behind
            assert await feed.get() is None and feed.ready() == []

    asyncio.run(main())


def test_a_stream_that_falls_behind_keeps_its_newest_events() -> None:
    """A stream reads a gap back from the store when a sequence number jumps: dropping
    the oldest loses nothing, and the end is always among what is kept."""

    async def main() -> None:
        hub = Hub()
        async with hub.subscribe("x") as stream:
            last = EVENTS_BACKLOG + 500
            for seq in range(1, last + 1):
                kind = EventKind.TERMINAL if seq == last else EventKind.STATE
                stream.deliver(Event("x", seq, kind, {}, 0.0))
            kept = [await stream.get() for _ in range(EVENTS_BACKLOG)]
            assert [e.seq for e in kept if e is not None] == list(range(501, last + 1))
            assert kept[-1] is not None and kept[-1].kind is EventKind.TERMINAL

    asyncio.run(main())
