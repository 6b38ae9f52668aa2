"""An SSE client that reads ``/rpa/v1/exec`` the way astron-agent's workflow node does.

Line by line; every ``data:`` line is parsed as JSON; every other line (comments,
``id:``, ``event:``, ``retry:``) is kept for assertions but otherwise ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class StreamResult:
    status_code: int
    headers: httpx.Headers
    lines: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""

    @property
    def ids(self) -> list[str]:
        return [line[3:].strip() for line in self.lines if line.startswith("id:")]

    @property
    def pings(self) -> int:
        return sum(1 for line in self.lines if line.startswith(":"))

    @property
    def terminal(self) -> dict[str, Any]:
        assert len(self.frames) == 1, f"expected exactly one data frame, got {self.frames}"
        return self.frames[0]

    def workflow_node_outputs(self) -> dict[str, Any]:
        """What astron-agent's node would report: raise on code != 0, else the last data."""
        outputs: dict[str, Any] = {}
        for frame in self.frames:
            if frame["code"] != 0:
                raise RuntimeError(frame["message"])
            outputs = frame["data"]
        return outputs


def exec_stream(
    base_url: str,
    body: Any,
    *,
    token: str | None = "t-secret",
    headers: dict[str, str] | None = None,
    stop_after_lines: int | None = None,
    timeout: float = 30.0,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
) -> StreamResult:
    request_headers = {"Content-Type": "application/json"}
    if token is not None:
        request_headers["Authorization"] = token
    request_headers.update(headers or {})
    data = content if content is not None else json.dumps(body).encode()
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(
            "POST", f"{base_url}/rpa/v1/exec", content=data, headers=request_headers, params=params
        ) as response,
    ):
        result = StreamResult(response.status_code, response.headers)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            result.body = response.read()
            return result
        for line in response.iter_lines():
            if not line:
                continue
            result.lines.append(line)
            if line.startswith("data:"):
                result.frames.append(json.loads(line[5:]))
            if stop_after_lines is not None and len(result.lines) >= stop_after_lines:
                break
        return result
