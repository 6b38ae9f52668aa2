"""A client that follows an execution to its end, reconnecting with ``Last-Event-ID``.

As an EventSource does: when the connection drops (a replica killed) or the
service says to reconnect (55005 on the compat stream, a bare ``retry:`` on the
native one), it connects again, through the same balancer, from the last event
id it saw.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

RECONNECT_CODE = 55005


@dataclass
class Followed:
    terminal: dict[str, Any] | None = None
    execution_id: str | None = None
    connections: int = 0
    ids: list[str] = field(default_factory=list)


async def follow_compat(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    token: str,
    *,
    deadline: float = 60,
    followed: Followed | None = None,
) -> Followed:
    """POST /rpa/v1/exec, then resume it until a terminal frame other than 55005.

    ``followed``: filled as it goes (the caller may watch its ids), else a new one."""
    followed = followed if followed is not None else Followed()
    async with asyncio.timeout(deadline):
        while followed.terminal is None:
            headers = {"Authorization": f"Bearer {token}"}
            if followed.ids:
                headers["Last-Event-ID"] = followed.ids[-1]
            elif followed.connections:
                raise AssertionError("the first connection dropped before any event id")
            frames = await _read(client, "POST", "/rpa/v1/exec", headers, body, followed)
            for data in frames:
                if data.get("code") != RECONNECT_CODE:
                    followed.terminal = data
            if followed.terminal is None:
                await asyncio.sleep(0.1)  # the retry an EventSource waits
    if followed.ids:
        followed.execution_id = followed.ids[-1].split(":")[0]
    return followed


async def follow_native(
    client: httpx.AsyncClient,
    execution_id: str,
    token: str,
    *,
    deadline: float = 60,
    followed: Followed | None = None,
) -> Followed:
    """GET the execution's events, resuming until the terminal event."""
    followed = followed if followed is not None else Followed()
    followed.execution_id = execution_id
    async with asyncio.timeout(deadline):
        while followed.terminal is None:
            headers = {"Authorization": f"Bearer {token}"}
            if followed.ids:
                headers["Last-Event-ID"] = followed.ids[-1]
            path = f"/rpa/v1/executions/{execution_id}/events"
            for data in await _read(client, "GET", path, headers, None, followed):
                if data.get("event") == "terminal":
                    followed.terminal = data
            if followed.terminal is None:
                await asyncio.sleep(0.1)
    return followed


async def _read(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None,
    followed: Followed,
) -> list[dict[str, Any]]:
    """The data frames of one connection (``event`` added); ids recorded as they come."""
    frames: list[dict[str, Any]] = []
    followed.connections += 1
    event = "message"
    try:
        async with client.stream(method, path, headers=headers, json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    followed.ids.append(line[3:].strip())
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    frames.append({"event": event, **json.loads(line[5:])})
                elif not line:
                    event = "message"
    except (httpx.TransportError, httpx.RemoteProtocolError):
        pass  # dropped: resume from the last id
    return frames
