"""MCP sessions, kept in the store so that every process knows them.

A session is issued on ``initialize`` (Streamable HTTP) or when an HTTP+SSE stream
opens, belongs to the key that opened it and to that transport (anything else gets "not
found", as for an execution), and lasts :data:`SESSION_SECONDS` after its last use:
renewed at most once every :data:`RENEW_AFTER` seconds, never brought back once ended.
"""

from __future__ import annotations

import secrets
import time

from rpa_gateway.security import TokenVault
from rpa_gateway.store.base import McpSession, Store

SESSION_SECONDS = 24 * 3600.0
RENEW_AFTER = 3600.0
HTTP, SSE = "http", "sse"


class McpSessions:
    def __init__(self, store: Store, vault: TokenVault) -> None:
        self._store = store
        self._vault = vault

    async def open(self, token: str, protocol_version: str, transport: str) -> McpSession:
        session = McpSession(
            id=secrets.token_urlsafe(24),
            owner=self._vault.fingerprint(token),
            protocol_version=protocol_version,
            expires_at=time.time() + SESSION_SECONDS,
            transport=transport,
        )
        await self._store.put_mcp_session(session)
        return session

    async def find(self, session_id: str, token: str, transport: str) -> McpSession | None:
        """The caller's session of that transport (renewed when due); ``None`` when unknown,
        ended, expired or another's.  Raises StoreError."""
        if not session_id or len(session_id) > 128:
            return None
        session = await self._store.mcp_session(session_id)
        if (
            session is None
            or session.transport != transport
            or not self._vault.owns(session.owner, token)
        ):
            return None
        if session.expires_at - time.time() < SESSION_SECONDS - RENEW_AFTER:
            await self.renew(session.id)
        return session

    async def renew(self, session_id: str) -> None:
        """Another :data:`SESSION_SECONDS` for a session in use (unless it ended)."""
        await self._store.update_mcp_session(session_id, expires_at=time.time() + SESSION_SECONDS)

    async def negotiated(self, session_id: str, protocol_version: str) -> None:
        """The session speaks the version its ``initialize`` settled on."""
        await self._store.update_mcp_session(session_id, protocol_version=protocol_version)

    async def end(self, session_id: str, token: str, transport: str) -> bool:
        """End the caller's session; False when there is none.  Raises StoreError."""
        if await self.find(session_id, token, transport) is None:
            return False
        return await self._store.end_mcp_session(session_id)

    async def forget(self, session_id: str) -> None:
        await self._store.end_mcp_session(session_id)
