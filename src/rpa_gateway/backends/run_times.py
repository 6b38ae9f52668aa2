"""How long a run took, from the start and end times the platform reports.

Only their difference is used, so the platform's clock and time zone do not matter:
both epoch numbers (seconds, or milliseconds when that large) or both ISO 8601 texts.
"""

from __future__ import annotations

import math
from datetime import datetime

_MS_EPOCH = 1e11  # an epoch in seconds stays below this until the year 5138
_LONGEST = 30 * 86400.0  # anything longer is not a run duration


def run_seconds(start: object, end: object) -> float | None:
    """``end - start`` in seconds, or None when either is missing or unreadable."""
    begun, ended = _instant(start), _instant(end)
    if begun is None or ended is None or type(begun) is not type(ended):
        return None
    if isinstance(begun, datetime) and isinstance(ended, datetime):
        if (begun.tzinfo is None) != (ended.tzinfo is None):
            return None
        seconds = (ended - begun).total_seconds()
    else:
        assert isinstance(begun, float) and isinstance(ended, float)
        seconds = ended - begun
    return seconds if 0.0 < seconds <= _LONGEST else None


def _instant(value: object) -> float | datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number) or number <= 0:
            return None
        return number / 1000.0 if number >= _MS_EPOCH else number
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            return _instant(float(value))
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
