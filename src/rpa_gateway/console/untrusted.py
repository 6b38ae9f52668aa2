"""Text from callers and robots, made safe to print on a terminal.

A run's result, its log lines, a project's name or a caller's sid can hold escape
sequences (``ESC[2J`` clears the screen, ``OSC 0`` retitles the terminal, ``OSC 8``
plants a hyperlink) or bidirectional overrides that reorder what is shown.  Every
such character is printed as a visible escape instead (``\\x1b``, ``\\u202e``), on a
terminal and in a pipe alike; markup is never interpreted (rich is always given
plain text).  JSON output stays exact JSON: the same characters become ``\\uXXXX``
escapes, which a JSON parser reads back to the very same string.
"""

from __future__ import annotations

import json
import re
from typing import Any

# DEL, C1 controls, line separators and the bidirectional marks, embeddings, overrides
# and isolates; C0 controls besides.
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
# In JSON text C0 controls occur only as structure (indentation) or already escaped.
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` on one line with every control character shown as an escape."""
    return _UNSAFE.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON that is safe on a terminal and parses back to ``value``.

    ``json.dumps`` already escapes C0 controls inside strings; the rest can occur only
    inside strings too, where ``\\uXXXX`` means the same character."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


__all__ = ["json_text", "visible"]
