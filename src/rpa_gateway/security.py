"""Callers' tokens: a keyed fingerprint to own executions, sealing to keep them at rest.

The fingerprint is HMAC-SHA256 under a key the service holds, so the store never
has anything a token could be recovered or brute-forced from without the key.
Sealing is AES-256-GCM with the execution id as associated data, so a sealed
token only opens for the execution it was sealed for.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
FINGERPRINT_KEY_FILE = "fingerprint.key"

log = logging.getLogger(__name__)


class TokenVault:
    """Fingerprints tokens always; seals and opens them only when given a sealing key."""

    def __init__(self, fingerprint_key: bytes, sealing_key: bytes | None) -> None:
        self._fingerprint_key = fingerprint_key
        self._aead = AESGCM(sealing_key) if sealing_key is not None else None

    @classmethod
    def from_settings(cls, token_key: bytes | None, data_dir: Path) -> TokenVault:
        if token_key is not None:
            return cls(_derive(token_key, b"owner fingerprint"), _derive(token_key, b"token seal"))
        return cls(_local_fingerprint_key(data_dir), None)

    @property
    def seals(self) -> bool:
        return self._aead is not None

    def fingerprint(self, token: str) -> str:
        return hmac.new(self._fingerprint_key, token.encode(), hashlib.sha256).hexdigest()[:40]

    def owns(self, owner: str, token: str) -> bool:
        return hmac.compare_digest(owner, self.fingerprint(token))

    def seal(self, token: str, execution_id: str) -> bytes | None:
        if self._aead is None:
            return None
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, token.encode(), execution_id.encode())

    def open(self, sealed: bytes, execution_id: str) -> str | None:
        """The token, or ``None`` without a key or when it was sealed under another key."""
        if self._aead is None or len(sealed) <= _NONCE_BYTES:
            return None
        try:
            plain = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], execution_id.encode()
            )
        except InvalidTag:
            return None
        return plain.decode()


def key_fingerprint(token_key: bytes) -> str:
    """Names ``RPA_TOKEN_KEY`` without revealing it: replicas compare theirs through the
    store (one with another key could not open the others' sealed tokens)."""
    return _derive(token_key, b"key fingerprint").hex()[:16]


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def private_directory(path: Path) -> None:
    """``path`` as a directory only this user can enter: made 0700, or an existing one
    (made by hand, or by an older version) tightened to it; one it cannot tighten is
    named in a warning."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o700)
        except OSError as exc:
            log.warning(
                "%s is open to other users (mode %o) and cannot be made private: %s",
                path,
                mode,
                exc.strerror,
            )


def _local_fingerprint_key(data_dir: Path) -> bytes:
    """A random key kept beside the store (mode 0600), made on first start."""
    path = data_dir / FINGERPRINT_KEY_FILE
    private_directory(data_dir)
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


def new_key() -> str:
    """A fresh ``RPA_TOKEN_KEY`` value."""
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
