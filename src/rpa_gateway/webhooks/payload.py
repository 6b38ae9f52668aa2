"""A delivery's body: ``{"type", "timestamp", "data"}`` where ``data`` is the execution as
``GET /rpa/v1/executions/{id}`` returns it.  A result larger than the bound is left out
(``result_truncated`` and ``result_url`` say where to read it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def body(event_type: str, event_at: float, view: bytes | None, max_result_bytes: int) -> bytes:
    """``view``: the execution as the API shows it, in JSON (None for a test event)."""
    head = f'{{"type":"{event_type}","timestamp":"{_instant(event_at)}","data":'.encode()
    if view is None:
        return head + b"{}}"
    if len(view) <= max_result_bytes:  # its result cannot be over the bound: as it is
        return head + view + b"}"
    data = json.loads(view)
    result = data.get("result")
    if isinstance(result, dict) and _size(result.get("data")) > max_result_bytes:
        data["result"] = {**result, "data": None}
        data["result_truncated"] = True
        data["result_url"] = f"/rpa/v1/executions/{data['id']}"
    return head + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"}"


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
