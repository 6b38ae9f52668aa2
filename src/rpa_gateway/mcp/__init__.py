"""The MCP door: every RPA project a tool, on the same executions as the REST API.

Layers, outermost first (the transports hold no execution logic; the tools hold no
JSON-RPC or HTTP):

- ``http_endpoint`` (``/mcp``, Streamable HTTP, every protocol generation),
  ``sse_endpoint`` (``/mcp/sse`` + ``/mcp/messages/``, the older HTTP+SSE transport)
  and ``stdio_bridge`` (``rpa-gateway mcp``) carry JSON-RPC messages;
- ``kernel`` hands each request to the official SDK's server kernel (version
  negotiation, per-version result shapes, ``server/discover``) with our handlers;
- ``tool_calls`` and ``tasks`` turn tool calls and task requests into execution
  operations (create, wait, get, cancel, list) of :mod:`rpa_gateway.service`;
- ``catalog`` says which tools there are; ``results`` renders executions as tool results.
"""
