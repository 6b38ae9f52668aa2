"""Page cursors as the list routes take them: a refusal (400) for one this API never gave."""

from __future__ import annotations

from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.cursors import decode_cursor


def page_after(cursor: str | None) -> tuple[float, str] | None:
    """Where the page starts: after ``cursor`` (a previous page's ``next_cursor``)."""
    if not cursor:
        return None
    before = decode_cursor(cursor)
    if before is None:
        raise RequestRejected(
            400, "invalid_cursor", "cursor is not one this API returned", ["cursor"]
        )
    return before
