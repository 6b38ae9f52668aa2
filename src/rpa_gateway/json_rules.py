"""JSON that every later step can take back: stored, sent in a frame, parsed by a browser.

Python's ``json`` accepts more than JSON (``NaN``, ``Infinity``), silently keeps
the last of duplicate keys, decodes ``"\\ud800"`` to a string no UTF-8 writer
can store, and nests as deep as the interpreter's stack - each of which failed
later, after the execution was recorded or even run.

- :func:`decode` is for request bodies: all of it is refused up front, with a
  message saying what is wrong.
- :func:`decode_reply` is for what the RPA platform or a local project sends:
  non-numbers and lone surrogates are refused (a reply that holds them is
  treated as unreadable), at a cost paid only when the text contains them.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # objects and arrays inside one another; documented in the README


class JsonRefused(ValueError):
    """Not JSON this service takes; the message says why."""


def decode(raw: bytes) -> Any:
    """Decode a request body; :class:`JsonRefused` says what is wrong and where."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
        # The walk is needed only if the text could nest that deep or has \\u escapes.
        if isinstance(value, dict | list) and (
            text.count("{") + text.count("[") > MAX_DEPTH or "\\u" in text
        ):
            _check_depth_and_text(value)
    except RecursionError:
        raise JsonRefused(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except JsonRefused as exc:
        raise JsonRefused(f"request body: {exc}") from None
    except ValueError as exc:
        raise JsonRefused(f"request body is not valid JSON: {exc}") from None
    return value


def decode_reply(raw: bytes | str) -> Any:
    """Decode a reply; :class:`JsonRefused` (a ValueError) for what could not be passed on."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8")
    try:
        value = _REPLY_DECODER.decode(text)
    except RecursionError:
        raise JsonRefused("nested too deep") from None
    # Lone surrogates come only from \\u escapes: look for them only when there are some.
    if ("\\ud" in text or "\\uD" in text) and isinstance(value, dict | list):
        _check_depth_and_text(value, depth_limit=None)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRefused(f"the key {_quoted(key)} comes more than once")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise JsonRefused(f"the number {text[:40]} is too large for a double")
    return number


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite_float
)
_REPLY_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _check_depth_and_text(value: Any, depth_limit: int | None = MAX_DEPTH) -> None:
    """Iteratively (a recursive walk would fail where the decoder did not)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth_limit is not None and depth > depth_limit:
            raise JsonRefused(f"nested deeper than {depth_limit} levels")
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
            f"a lone surrogate (\\u{ord(text[exc.start]):04x}) in {_printable(where)}:"
            " not valid Unicode"
        ) from None


def _printable(where: str) -> str:
    return where.encode("utf-8", "replace").decode()[:120]


def _quoted(key: str) -> str:
    shown = key if len(key) <= 40 else key[:39] + "…"
    return json.dumps(shown)
