"""Reading the RPA OpenAPI's replies, in either dialect: ``{"code", "msg", "data"}``
envelopes where code ``"0000"`` is success and ``"5001"`` an error even with HTTP 200 (so
the HTTP status alone is never trusted), and whatever a proxy sends instead.  Every string
taken from a reply is kept only with the caller's token scrubbed out of it."""

from __future__ import annotations

from typing import Any

from rpa_gateway.executions import JsonObject
from rpa_gateway.json_rules import JsonRefused, decode_reply
from rpa_gateway.telemetry.redaction import redact

SUCCESS = "0000"
MAX_DETAIL = 300


def envelope(status: int, raw: bytes, token: str) -> dict[str, Any] | str:
    """The decoded reply, or a one-line reason why it is not a usable envelope."""
    try:
        decoded = decode_reply(raw)
    except JsonRefused as exc:  # valid to Python, not to what its data passes through next
        return f"HTTP {status}: reply cannot be passed on: {exc}"
    except ValueError:
        return f"HTTP {status}: reply is not JSON ({snippet(raw, token)})"
    if not isinstance(decoded, dict):
        return f"HTTP {status}: reply is not a JSON object"
    if "code" not in decoded and status >= 400:
        return f"HTTP {status}: {clip(str(decoded.get('detail', decoded)), token)}"
    return decoded


def upstream_message(status: int, envelope: dict[str, Any], token: str) -> str:
    code, msg = envelope.get("code"), envelope.get("msg")
    if msg:
        return clip(str(msg), token)
    return f"HTTP {status}, upstream code {code!s}"


def decode_or_none(raw: bytes) -> Any:
    try:
        return decode_reply(raw)
    except ValueError:
        return None


def as_object(outputs: object) -> JsonObject:
    """The robot's outputs as the dict callers expect (``{}`` when it sent none)."""
    if outputs is None:
        return {}
    if isinstance(outputs, dict):
        return outputs
    return {"value": outputs}


def snippet(raw: bytes, token: str) -> str:
    text = " ".join(redact(raw[:400].decode("utf-8", "replace"), (token,)).split())
    return text[:80] or "empty body"


def clip(text: str, token: str) -> str:
    """Redacted first, then cut: a cut must never leave a piece of the token behind."""
    text = redact(text, (token,))
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
