"""Who may call the service at all: ``RPA_API_KEYS``.

Unset, any non-empty token is a caller (the RPA platform behind the astron
backend checks it; executions stay private to their token either way).  Set, a
token must be one of the keys.  Keys are given as ``sha256:<hex>`` digests (what
``rpa-gateway apikey`` prints) or, less safely, in clear; only digests are kept.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_entries(entries: Iterable[str], source: str) -> list[bytes]:
    """Digests of the entries (blanks skipped; a ``#`` starts a comment, on a line of its own
    or after a key); ValueError names a bad one."""
    digests = []
    for number, line in enumerate(entries, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.lower().startswith("sha256:"):
            match = _DIGEST.fullmatch(entry)
            if match is None:
                raise ValueError(f"{source} entry {number}: sha256: takes 64 hex digits")
            digests.append(bytes.fromhex(match.group(1)))
        else:
            digests.append(digest(entry))
    return digests


def read_entries(path: Path) -> list[bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return parse_entries(text.splitlines(), str(path))


class ApiKeys:
    def __init__(self, digests: Iterable[bytes]) -> None:
        self._digests = frozenset(digests)

    def replace(self, digests: Iterable[bytes]) -> None:
        """Admit these from now on (a reloaded ``RPA_API_KEYS_FILE``)."""
        self._digests = frozenset(digests)

    def __len__(self) -> int:
        return len(self._digests)

    def admits(self, token: str) -> bool:
        # A lookup by SHA-256 digest: timing can tell nothing about a key's bytes.
        return digest(token) in self._digests


def new_key() -> tuple[str, str]:
    """A fresh key and the ``RPA_API_KEYS`` entry that admits it."""
    key = secrets.token_urlsafe(32)
    return key, f"sha256:{digest(key).hex()}"


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization`` value: ``Bearer <token>``, or the token alone (as
    astron-agent's node sends it); empty when there is none."""
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


def admitted(token: str, keys: ApiKeys | None, admins: ApiKeys | None) -> bool:
    """Whether the token is a caller: any, without ``RPA_API_KEYS``; else one of the keys or
    of the operators' keys."""
    return keys is None or keys.admits(token) or (admins is not None and admins.admits(token))
