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
    if size > limits.max_bytes:
        raise InvalidRequest(
            f"params take {size} bytes as JSON; the RPA platform takes at most {limits.max_bytes}",
            "params",
        )
    _check(params, "params", 0, limits)


def _check(value: Any, where: str, depth: int, limits: JsonLimits) -> None:
    if isinstance(value, dict | list) and depth > limits.max_depth:
        raise InvalidRequest(
            f"{where} is nested {depth} deep; the RPA platform takes at most"
            f" {limits.max_depth} levels",
            where,
        )
    if isinstance(value, dict):
        if len(value) > limits.max_object_properties:
            raise InvalidRequest(
                f"{where} has {len(value)} properties; the RPA platform takes at most"
                f" {limits.max_object_properties}",
                where,
            )
        for name, item in value.items():
            _check(item, f"{where}.{name}", depth + 1, limits)
    elif isinstance(value, list):
        if len(value) > limits.max_array_items:
            raise InvalidRequest(
                f"{where} has {len(value)} items; the RPA platform takes at most"
                f" {limits.max_array_items}",
                where,
            )
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1, limits)
    elif isinstance(value, str):
        if len(value) > limits.max_string_length:
            raise InvalidRequest(
                f"{where} is {len(value)} characters long; the RPA platform takes at most"
                f" {limits.max_string_length}",
                where,
            )
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
