"""MCP sessions, kept in the store so that every process knows them.

A session is issued on ``initialize`` (Streamable HTTP) or when an HTTP+SSE stream
opens, belongs to the key that opened it (another key gets "not found", as for an
execution), and lasts :data:`SESSION_SECONDS` after its last use (renewed at most once
every :data:`RENEW_AFTER` seconds, not on every request).
"""

from __future__ import annotations

import secrets
import time

from rpa_gateway.security import TokenVault
from rpa_gateway.store.base import McpSession, Store

SESSION_SECONDS = 24 * 3600.0
RENEW_AFTER = 3600.0


class McpSessions:
    def __init__(self, store: Store, vault: TokenVault) -> None:
        self._store = store
        self._vault = vault

    def owner(self, token: str) -> str:
        """The caller, as sessions and executions record it (a keyed fingerprint)."""
        return self._vault.fingerprint(token)

    async def open(self, token: str, protocol_version: str) -> McpSession:
        session = McpSession(
            id=secrets.token_urlsafe(24),
            owner=self._vault.fingerprint(token),
            protocol_version=protocol_version,
            expires_at=time.time() + SESSION_SECONDS,
        )
        await self._store.put_mcp_session(session)
        return session

    async def find(self, session_id: str, token: str) -> McpSession | None:
        """The caller's session (renewed when due); ``None`` when unknown, ended, expired
        or another caller's.  Raises StoreError."""
        if not session_id or len(session_id) > 128:
            return None
        session = await self._store.mcp_session(session_id)
        if session is None or not self._vault.owns(session.owner, token):
            return None
        now = time.time()
        if session.expires_at - now < SESSION_SECONDS - RENEW_AFTER:
            session = McpSession(
                session.id, session.owner, session.protocol_version, now + SESSION_SECONDS
            )
            await self._store.put_mcp_session(session)
        return session

    async def renew(self, session: McpSession) -> None:
        """Another :data:`SESSION_SECONDS` for a session in use without requests (a stream)."""
        await self._store.put_mcp_session(
            McpSession(
                session.id, session.owner, session.protocol_version, time.time() + SESSION_SECONDS
            )
        )

    async def negotiated(self, session: McpSession, protocol_version: str) -> McpSession:
        """The session speaks the version its ``initialize`` settled on."""
        if protocol_version == session.protocol_version:
            return session
        updated = McpSession(session.id, session.owner, protocol_version, session.expires_at)
        await self._store.put_mcp_session(updated)
        return updated

    async def end(self, session_id: str, token: str) -> bool:
        """End the caller's session; False when there is none.  Raises StoreError."""
        if await self.find(session_id, token) is None:
            return False
        return await self._store.end_mcp_session(session_id)

    async def forget(self, session_id: str) -> None:
        await self._store.end_mcp_session(session_id)
