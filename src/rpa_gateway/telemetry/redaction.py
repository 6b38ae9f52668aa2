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


# A secret this long is replaced wherever it stands; a shorter one only where it stands as a
# word of its own, so that a one-letter token ("t") is scrubbed where it appears as itself
# and never out of the middle of words ("Timeout error").
WHOLE_SECRET_LENGTH = 8


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = scrub(text, secret)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _QUERY_KEY.sub(rf"\1{REDACTED}", text)
    return _AUTH_HEADER.sub(rf"\1{REDACTED}", text)


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (see :data:`WHOLE_SECRET_LENGTH`)."""
    if not secret or secret not in text:
        return text
    if len(secret) >= WHOLE_SECRET_LENGTH:
        return text.replace(secret, REDACTED)
    alone = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
    return alone.sub(REDACTED, text)
