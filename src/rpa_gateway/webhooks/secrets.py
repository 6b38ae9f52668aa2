"""Endpoint secrets at rest: sealed with RPA_TOKEN_KEY (AES-GCM, bound to the endpoint's
id) when the service has it, as callers' tokens are; as given without it (the embedded
store's database is private to the service's user).  A secret stored before sealing, or
without a key, reads as itself."""

from __future__ import annotations

import base64
import dataclasses

from rpa_gateway.security import TokenVault
from rpa_gateway.webhooks.model import Endpoint

_SEALED = "sealed:"


class SecretSealer:
    def __init__(self, vault: TokenVault) -> None:
        self._vault = vault

    def sealed(self, endpoint: Endpoint) -> Endpoint:
        """A copy to store: its secrets sealed (those sealed already as they are)."""
        return dataclasses.replace(
            endpoint,
            secret=self._seal(endpoint.secret, endpoint.id),
            previous_secret=(
                self._seal(endpoint.previous_secret, endpoint.id)
                if endpoint.previous_secret is not None
                else None
            ),
        )

    def opened(self, secret: str, webhook_id: str) -> str | None:
        """The secret, or None: sealed under another RPA_TOKEN_KEY, or none is set now."""
        if not secret.startswith(_SEALED):
            return secret
        try:
            sealed = base64.b64decode(secret.removeprefix(_SEALED), validate=True)
        except ValueError:
            return None
        return self._vault.open(sealed, _bound_to(webhook_id))

    def _seal(self, secret: str, webhook_id: str) -> str:
        if secret.startswith(_SEALED):
            return secret
        sealed = self._vault.seal(secret, _bound_to(webhook_id))
        if sealed is None:  # no key: kept as given
            return secret
        return _SEALED + base64.b64encode(sealed).decode()


def _bound_to(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"
