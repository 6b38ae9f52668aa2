"""The last line of defence for secrets: scrub text before it is logged or shown.

Code never logs tokens on purpose; this catches accidents - an upstream error
that echoes an ``Authorization`` header, a key in an exception text.  The log
handlers run it on every record (``logging_setup.RecordFilter``).
"""

from __future__ import annotations

import re

_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
_AUTH_HEADER = re.compile(r"(?i)(['\"]?authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+")
# A caller's key in a URL (the MCP endpoints' ?key=, where the operator allows it).
# ``k``, ``e`` and ``y`` may come percent-encoded: the URL parser decodes the name.
_QUERY_KEY = re.compile(r"([?&](?:amp;)?(?:[kK]|%6[bB])(?:[eE]|%65)(?:[yY]|%79)=)[^&#\s'\"]+")
REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _QUERY_KEY.sub(rf"\1{REDACTED}", text)
    return _AUTH_HEADER.sub(rf"\1{REDACTED}", text)
