"""Page cursors of execution lists: where the last page ended, opaque to callers."""

from __future__ import annotations

import base64
import binascii

from rpa_gateway.executions import Execution

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(execution: Execution) -> str:
    return encode_position(execution.created_at, execution.id)


def encode_position(created_at: float, item_id: str) -> str:
    """A page's end in a list ordered by (created_at, id), as :func:`decode_cursor` reads it."""
    raw = f"{created_at!r}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, execution_id = raw.split("|", 1)
        return float(created_at), execution_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
