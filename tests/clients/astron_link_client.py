"""astron-agent's MCP client, as its link plugin drives it, for tests/test_mcp_clients.py.

Runs in ``.venv-mcp16`` (``mcp==1.6.0``, pinned in ``mcp16-requirements.txt``, as astron-agent
pins it), never in the project's venv.  Like astron-agent's
``core/plugin/link/service/community/tools/mcp/mcp_server.py``, every operation opens a fresh
``sse_client(url=url)`` with no headers (the URL is the only place for a key), a
``ClientSession(read, write, logging_callback=None)``, ``initialize()``, then one
``list_tools()`` or ``call_tool(name, arguments=...)``, read through ``model_dump()``.

    python astron_link_client.py <sse-url> [--list] [<tool> <json-args>]...

Prints one JSON object: ``{"operations": [...]}``, one entry per operation with the
protocol version ``initialize`` settled and the tools or the call's result, or ``error`` (type,
message, HTTP status when there was one).  Each operation is bounded (the client itself has
no timeout and hangs on some failures), so a hang is reported, not waited out.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.sse import sse_client

BOUND = 30.0  # seconds for one operation (astron-agent gives list or call 40 s in all)


async def operate(url: str, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"operation": "call_tool" if tool else "list_tools", "tool": tool}
    async with (
        sse_client(url=url) as (read, write),
        ClientSession(read, write, logging_callback=None) as session,
    ):
        init = await session.initialize()
        found["protocolVersion"] = init.protocolVersion
        found["serverInfo"] = init.serverInfo.model_dump()
        if tool is None:
            found["tools"] = (await session.list_tools()).model_dump()["tools"]
        else:
            found["result"] = (await session.call_tool(tool, arguments=arguments)).model_dump()
    return found


def describe(error: BaseException) -> dict[str, Any]:
    """The innermost cause of a failure (anyio's task groups wrap it in ExceptionGroups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    found: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, httpx.HTTPStatusError):
        found["status"] = error.response.status_code
        found["wwwAuthenticate"] = error.response.headers.get("www-authenticate")
    return found


async def main(url: str, plan: list[tuple[str | None, dict[str, Any]]]) -> dict[str, Any]:
    operations = []
    for tool, arguments in plan:
        try:
            operations.append(await asyncio.wait_for(operate(url, tool, arguments), BOUND))
        except TimeoutError:
            operations.append({"tool": tool, "error": {"type": "Timeout", "bound": BOUND}})
        except Exception as error:  # reported, as astron-agent maps it to an error code
            operations.append({"tool": tool, "error": describe(error)})
    return {"operations": operations}


def plan_of(args: list[str]) -> list[tuple[str | None, dict[str, Any]]]:
    plan: list[tuple[str | None, dict[str, Any]]] = []
    while args:
        if args[0] == "--list":
            plan.append((None, {}))
            args = args[1:]
        else:
            plan.append((args[0], json.loads(args[1])))
            args = args[2:]
    return plan


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    result = asyncio.run(main(sys.argv[1], plan_of(sys.argv[2:]) or [(None, {})]))
    print(json.dumps(result, default=str))
