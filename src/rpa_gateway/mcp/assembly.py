"""The MCP door assembled from the service's parts (at start-up, in the app's lifespan)."""

from __future__ import annotations

from rpa_gateway.backends.base import Backend
from rpa_gateway.config import Settings
from rpa_gateway.lifecycle import Lifecycle
from rpa_gateway.mcp.catalog import ToolCatalog
from rpa_gateway.mcp.door import McpDoor
from rpa_gateway.mcp.kernel import McpKernel
from rpa_gateway.mcp.messages import McpMessages
from rpa_gateway.mcp.sessions import McpSessions
from rpa_gateway.mcp.tasks import Tasks
from rpa_gateway.mcp.tool_calls import ToolCalls
from rpa_gateway.ping_sweep import PingSweep
from rpa_gateway.security import TokenVault
from rpa_gateway.service import ExecutionService
from rpa_gateway.store.base import Store
from rpa_gateway.telemetry import Telemetry


def build_door(
    settings: Settings,
    store: Store,
    service: ExecutionService,
    backend: Backend,
    vault: TokenVault,
    lifecycle: Lifecycle,
    telemetry: Telemetry,
    pings: PingSweep,
) -> McpDoor:
    tools = ToolCatalog(
        backend.projects,
        wait_seconds=settings.rpa_mcp_wait_seconds,
        max_wait_seconds=settings.rpa_mcp_max_wait_seconds,
    )
    calls = ToolCalls(
        service,
        tools,
        wait_seconds=settings.rpa_mcp_wait_seconds,
        max_wait_seconds=settings.rpa_mcp_max_wait_seconds,
        accepting=lambda: not lifecycle.draining,
    )
    tasks = Tasks(calls, retention_seconds=settings.rpa_retention_seconds)
    kernel = McpKernel(calls, tools, tasks, telemetry)
    return McpDoor(
        settings, store, McpMessages(kernel, store), McpSessions(store, vault), lifecycle, pings
    )
