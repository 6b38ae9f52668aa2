"""JSON request bodies held to what every later step can take back.

Python's ``json`` accepts more than JSON (``NaN``, ``Infinity``), silently keeps
the last of duplicate keys, decodes ``"\\ud800"`` to a string no UTF-8 writer
can store, and nests as deep as the interpreter's stack - each of which failed
later, after the execution was recorded or even run.  Here they are refused
up front, with a message saying what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # objects and arrays inside one another; documented in the README


class JsonRefused(Exception):
    """The body is not JSON this service takes; the message says why, for the caller."""


def decode(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JsonRefused(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise JsonRefused(f"request body is not valid JSON: {exc}") from None
    if isinstance(value, dict | list):
        _check_depth_and_text(value)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRefused(f"request body has the key {_quoted(key)} more than once")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"request body holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise JsonRefused(f"request body holds the number {text[:40]}, too large for a double")
    return number


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite_float
)


def _check_depth_and_text(value: Any) -> None:
    """Iteratively (a recursive walk would fail where the decoder did not)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonRefused(f"request body is nested deeper than {MAX_DEPTH} levels")
        pairs: Any
        if isinstance(item, dict):
            for key in item:
                _check_text(key, f"a key of {path or 'the body'}")
            pairs = item.items()
        else:
            pairs = enumerate(item)
        for key, child in pairs:
            if isinstance(child, str):
                _check_text(child, _join(path, key))
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1, _join(path, key)))


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise JsonRefused(
            f"request body holds a lone surrogate (\\u{ord(text[exc.start]):04x}) in"
            f" {_printable(where)}: not valid Unicode"
        ) from None


def _printable(where: str) -> str:
    return where.encode("utf-8", "replace").decode()[:120]


def _quoted(key: str) -> str:
    shown = key if len(key) <= 40 else key[:39] + "…"
    return json.dumps(shown)
