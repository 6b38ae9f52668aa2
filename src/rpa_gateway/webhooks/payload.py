"""A delivery's body: ``{"type", "timestamp", "data"}`` where ``data`` is the execution as
``GET /rpa/v1/executions/{id}`` returns it.  A result larger than the bound is left out
(``result_truncated`` and ``result_url`` say where to read it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rpa_gateway.api.views import ExecutionView
from rpa_gateway.executions import Execution


def body(
    event_type: str, event_at: float, execution: Execution | None, max_result_bytes: int
) -> bytes:
    data: dict[str, Any] = {}
    if execution is not None:
        data = ExecutionView.of(execution).model_dump(mode="json")
        result = data.get("result")
        if isinstance(result, dict) and _size(result.get("data")) > max_result_bytes:
            result["data"] = None
            data["result_truncated"] = True
            data["result_url"] = f"/rpa/v1/executions/{execution.id}"
    message = {"type": event_type, "timestamp": _instant(event_at), "data": data}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
