"""The managed platform's bounds on JSON it takes (its discovery route's ``jsonLimits``),
checked here first: a request beyond them gets a 422 naming the field before anything is
sent or recorded, instead of a 55001 from the platform after the fact.

Measured as the platform measures (``upstream-managed-executions.md`` §7): bytes of
compact UTF-8 JSON, depth with the root at 0, strings in code points, integers within
±(2**53 - 1).
"""

from __future__ import annotations

import json
from typing import Any

from rpa_gateway.backends.base import InvalidRequest
from rpa_gateway.backends.contract import JsonLimits

SAFE_INTEGER = 2**53 - 1


def check_params(params: Any, limits: JsonLimits) -> None:
    """Raise :class:`InvalidRequest` naming the first part of ``params`` the limits refuse."""
    size = len(json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode())
    _bound("params", size, limits.max_bytes, "bytes as JSON")
    _check(params, "params", 0, limits)


def _bound(where: str, found: int, most: int, unit: str) -> None:
    if found > most:
        raise InvalidRequest(
            f"{where}: {found} {unit}; the RPA platform takes at most {most}", where
        )


def _check(value: Any, where: str, depth: int, limits: JsonLimits) -> None:
    if isinstance(value, dict | list):
        _bound(where, depth, limits.max_depth, "levels deep")
    if isinstance(value, dict):
        _bound(where, len(value), limits.max_object_properties, "properties")
        for name, item in value.items():
            _check(item, f"{where}.{name}", depth + 1, limits)
    elif isinstance(value, list):
        _bound(where, len(value), limits.max_array_items, "items")
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1, limits)
    elif isinstance(value, str):
        _bound(where, len(value), limits.max_string_length, "characters")
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or value.is_integer())
        and abs(value) > SAFE_INTEGER
    ):
        raise InvalidRequest(
            f"{where} is beyond ±{SAFE_INTEGER}, the integers the RPA platform takes",
            where,
        )
