"""Small helpers for the native API over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(
    base_url: str,
    body: dict[str, Any],
    token: str = "t-secret",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{base_url}/rpa/v1/executions",
        json=body,
        headers={**auth(token), **(headers or {})},
        timeout=10,
    )


def start_execution(base_url: str, token: str, project: str, params: dict[str, Any]) -> str:
    """Creates an execution (202 asserted); its id."""
    created = create(base_url, {"project_id": project, "params": params}, token)
    assert created.status_code == 202, created.text
    execution_id: str = created.json()["id"]
    return execution_id


def get(base_url: str, execution_id: str, token: str = "t-secret") -> httpx.Response:
    return httpx.get(
        f"{base_url}/rpa/v1/executions/{execution_id}", headers=auth(token), timeout=10
    )


def events(
    base_url: str,
    execution_id: str,
    token: str = "t-secret",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, list[dict[str, Any]], list[str]]:
    """(status, parsed data payloads with their event names, raw lines) of the events stream."""
    frames: list[dict[str, Any]] = []
    lines: list[str] = []
    with httpx.stream(
        "GET",
        f"{base_url}/rpa/v1/executions/{execution_id}/events",
        headers={**auth(token), **(headers or {})},
        params=params,
        timeout=30,
    ) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [], []
        event_name = "message"
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(line)
            if line.startswith("event:"):
                event_name = line[6:].strip()
            elif line.startswith("data:"):
                frames.append({"event": event_name, **json.loads(line[5:])})
    return 200, frames, lines
