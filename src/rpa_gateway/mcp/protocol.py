"""Protocol constants: versions, headers, ``_meta`` keys and JSON-RPC error codes."""

from __future__ import annotations

from typing import Final

from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)
from mcp_types.jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

__all__ = [
    "BATCH_VERSIONS",
    "CLIENT_CAPABILITIES_META_KEY",
    "CLIENT_INFO_META_KEY",
    "DEFAULT_HANDSHAKE_VERSION",
    "HANDSHAKE_VERSIONS",
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_HEADER",
    "METHOD_NOT_FOUND",
    "MISSING_REQUIRED_CLIENT_CAPABILITY",
    "MODERN_VERSIONS",
    "NAME_HEADER",
    "PARSE_ERROR",
    "PROTOCOL_VERSION_HEADER",
    "PROTOCOL_VERSION_META_KEY",
    "RELATED_TASK_META_KEY",
    "REQUEST_CANCELLED",
    "SESSION_HEADER",
    "SUPPORTED_VERSIONS",
    "TASKS_EXTENSION",
    "TASKS_VERSION",
    "UNSUPPORTED_PROTOCOL_VERSION",
]

HANDSHAKE_VERSIONS: Final = tuple(HANDSHAKE_PROTOCOL_VERSIONS)  # 2024-11-05 … 2025-11-25
MODERN_VERSIONS: Final = tuple(MODERN_PROTOCOL_VERSIONS)  # 2026-07-28: stateless
SUPPORTED_VERSIONS: Final = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
# What a request without MCP-Protocol-Version speaks, when nothing else says (the rule of
# 2025-06-18 and later).
DEFAULT_HANDSHAKE_VERSION: Final = "2025-03-26"
# Only 2025-03-26 lets a POST carry a JSON-RPC batch; later versions forbid it.
BATCH_VERSIONS: Final = frozenset({"2025-03-26"})
TASKS_VERSION: Final = "2025-11-25"  # the tasks utility of the handshake generation
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"  # the 2026-07-28 extension
RELATED_TASK_META_KEY: Final = "io.modelcontextprotocol/related-task"
REQUEST_CANCELLED: Final = -32800  # the SDKs' code for a request its client cancelled

PROTOCOL_VERSION_HEADER: Final = "mcp-protocol-version"
METHOD_HEADER: Final = "mcp-method"
NAME_HEADER: Final = "mcp-name"
SESSION_HEADER: Final = "mcp-session-id"
