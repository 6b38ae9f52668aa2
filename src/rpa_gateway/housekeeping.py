"""Periodic upkeep: delete finished executions past retention, expire orphaned ones, forget
expired MCP sessions."""

from __future__ import annotations

import asyncio
import logging
import time

from rpa_gateway.service import ExecutionService
from rpa_gateway.store.base import Store

log = logging.getLogger(__name__)

PURGE_BATCH = 500


async def sweep(store: Store, executions: ExecutionService, retention: float) -> tuple[int, int]:
    """One pass; returns (executions purged, executions expired)."""
    now = time.time()
    purged = 0
    if retention > 0:
        while True:
            deleted = await store.purge_finished(now - retention, PURGE_BATCH)
            purged += deleted
            if deleted < PURGE_BATCH:
                break
        while True:  # deliveries done (or failed) as long ago go too
            deleted = await store.webhooks.purge(now - retention, PURGE_BATCH)
            if deleted < PURGE_BATCH:
                break
            await asyncio.sleep(0)  # the store answers without yielding: let others in
    expired = await executions.expire_waiting(now)
    await store.purge_mcp_sessions(now)
    return purged, expired


async def run_housekeeping(
    store: Store, executions: ExecutionService, *, retention: float, interval: float
) -> None:
    while True:
        try:
            purged, expired = await sweep(store, executions, retention)
        except Exception:  # a store fault, or a bug: the next sweep tries again
            log.exception("housekeeping failed; trying again in %.0f s", interval)
        else:
            if purged or expired:
                log.info("housekeeping: purged %d finished executions, expired %d", purged, expired)
        await asyncio.sleep(interval)
