"""The MCP door as independent, real clients use it, each in its own runtime:

- astron-agent's link plugin: ``mcp==1.6.0`` (in ``.venv-mcp16``), legacy HTTP+SSE at
  ``/mcp/sse`` with the key in the URL and no headers (tests/clients/astron_link_client.py);
- the official TypeScript SDK under node (tests/clients/ts): Streamable HTTP at ``/mcp`` and
  its legacy SSE transport, with ``Authorization: Bearer``;
- ``rpa-gateway mcp`` (stdio) launched as a server by the official Python SDK, on both
  protocol generations.

``make test`` sets up the venv, node and the SDK's node_modules (Makefile); when they are
missing these tests fail saying so, they are never skipped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from rpa_gateway.access import new_key
from tests.conftest import FAST
from tests.gateway_process import GatewayProcess
from tests.mcp_support import LATEST_HANDSHAKE, MODERN, local_env, make_projects

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
MCP16_PYTHON = ROOT / ".venv-mcp16" / "bin" / "python"
TS_CLIENT = CLIENTS / "ts"
TS_TARGET = "tests/clients/ts/node_modules/.installed"
SET_UP_BY_MAKE = "`make test` sets it up (alone: `make {}`)"

EXPECTED_TOOLS = {"greet", "sleeper", "rpa_run", "rpa_wait"}
TS_SUPPORTED = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2024-10-07"}
RUN_BOUND = 120.0  # seconds for one client process (each takes under a second here)
CALL_BOUND = 60.0  # seconds for one stdio scenario


@pytest.fixture(scope="module")
def key() -> str:
    # Prefixed: one key in 64 from new_key() starts with "-", and argparse then takes the
    # value of `rpa-gateway mcp --token <key>` for an option.
    return "k" + new_key()[0]


@pytest.fixture(scope="module")
def mcp_gateway(tmp_path_factory: pytest.TempPathFactory, key: str) -> Iterator[GatewayProcess]:
    """One gateway for the module, as ``start_gateway(upstream=False, ...)`` would start it:
    the local backend with the MCP test projects, one caller key, ``?key=`` allowed.  Logs at
    DEBUG, so that a key leaking into any log line is seen."""
    root = tmp_path_factory.mktemp("mcp-clients")
    env = local_env(
        make_projects(root / "projects"),
        RPA_API_KEYS=key,
        RPA_MCP_ALLOW_QUERY_KEY="true",
        LOG_LEVEL="DEBUG",
    )
    (root / "gw").mkdir()
    gateway = GatewayProcess({**FAST, **env}, root / "gw").start()
    yield gateway
    gateway.stop()


def run_client(command: list[str], cwd: Path = ROOT) -> tuple[int, dict[str, Any]]:
    """Run a client process; its exit code and the JSON object it printed last."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=RUN_BOUND, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{command[:2]} still running after {RUN_BOUND:g} s: {exc}") from None
    lines = done.stdout.strip().splitlines()
    try:
        return done.returncode, json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(
            f"{command[:2]} exited {done.returncode} without its JSON line\n"
            f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
        ) from None


def assert_tools_described(tools: list[dict[str, Any]]) -> None:
    by_name = {tool["name"]: tool for tool in tools}
    assert by_name.keys() >= EXPECTED_TOOLS, sorted(by_name)
    for name in EXPECTED_TOOLS:
        assert isinstance(by_name[name].get("description"), str), by_name[name]
        assert by_name[name]["description"].strip(), by_name[name]
        schema = by_name[name].get("inputSchema")
        assert isinstance(schema, dict) and schema.get("type") == "object", by_name[name]


# --- astron-agent: mcp 1.6.0 over HTTP+SSE, the key in the URL ------------------------------


def mcp16_python() -> str:
    if not MCP16_PYTHON.exists() or not (MCP16_PYTHON.parent.parent / ".installed").exists():
        venv = MCP16_PYTHON.parent.parent
        pytest.fail(
            f"{venv} (mcp==1.6.0) is missing: " + SET_UP_BY_MAKE.format(".venv-mcp16/.installed")
        )
    return str(MCP16_PYTHON)


def test_astron_link_client_over_sse_with_the_key_in_the_url(
    mcp_gateway: GatewayProcess, key: str
) -> None:
    url = f"{mcp_gateway.base_url}/mcp/sse?key={key}"
    script = str(CLIENTS / "astron_link_client.py")
    rc, out = run_client(
        [mcp16_python(), script, url, "--list", "greet", '{"name": "Ada"}', "failing", "{}"]
    )
    assert rc == 0, out
    listed, greeted, failed = out["operations"]
    for operation in out["operations"]:
        assert "error" not in operation, operation
        assert operation["protocolVersion"] == "2024-11-05", operation
    assert_tools_described(listed["tools"])

    assert greeted["result"]["isError"] is False, greeted
    texts = [item["text"] for item in greeted["result"]["content"] if item["type"] == "text"]
    assert any("Hello, Ada!" in text for text in texts), greeted

    assert failed["result"]["isError"] is True, failed
    first = failed["result"]["content"][0]
    assert first["type"] == "text" and first["text"].startswith("FAILED (code 55002)"), failed

    assert key not in mcp_gateway.log_text()


def test_astron_link_client_without_a_key_is_refused(mcp_gateway: GatewayProcess) -> None:
    script = str(CLIENTS / "astron_link_client.py")
    rc, out = run_client([mcp16_python(), script, f"{mcp_gateway.base_url}/mcp/sse", "--list"])
    assert rc == 0, out
    [operation] = out["operations"]
    error = operation.get("error")
    assert error is not None, operation
    assert error["type"] == "HTTPStatusError" and error["status"] == 401, error
    assert error["wwwAuthenticate"] == "Bearer", error


# --- the TypeScript SDK under node -----------------------------------------------------------


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: " + SET_UP_BY_MAKE.format("system-packages"))
    pinned = json.loads((TS_CLIENT / "package.json").read_text())["dependencies"]
    sdk = TS_CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    if not sdk.exists():
        pytest.fail(f"{sdk.parent} is missing: " + SET_UP_BY_MAKE.format(TS_TARGET))
    installed = json.loads(sdk.read_text())["version"]
    if installed != pinned["@modelcontextprotocol/sdk"]:
        pytest.fail(
            f"@modelcontextprotocol/sdk {installed} is installed, not the pinned one: "
            + SET_UP_BY_MAKE.format(TS_TARGET)
        )
    return found


def ts_client(url: str, key: str, *extra: str) -> dict[str, Any]:
    command = [node(), "mcp_client.mjs", url, "greet", '{"name": "Ada"}']
    rc, out = run_client([*command, "--auth", f"Bearer {key}", *extra], cwd=TS_CLIENT)
    assert rc == 0 and "error" not in out, out
    assert_tools_described(out["tools"])
    result = out["callResult"]
    assert result["isError"] is False, result
    assert result["structuredContent"]["result"]["greeting"] == "Hello, Ada!", result
    assert out["transportErrors"] == [], out
    return out


def test_typescript_sdk_over_streamable_http(mcp_gateway: GatewayProcess, key: str) -> None:
    out = ts_client(f"{mcp_gateway.base_url}/mcp", key)
    assert out["negotiatedProtocolVersion"] == LATEST_HANDSHAKE, out
    assert out["sessionId"], out


def test_typescript_sdk_over_its_legacy_sse_transport(
    mcp_gateway: GatewayProcess, key: str
) -> None:
    out = ts_client(f"{mcp_gateway.base_url}/mcp/sse", key, "--sse")
    assert out["transport"] == "sse"
    assert out["negotiatedProtocolVersion"] in TS_SUPPORTED, out


# --- the stdio bridge, launched by the official Python SDK -----------------------------------


def bridge(base_url: str, token: str) -> StdioServerParameters:
    command = Path(sys.executable).parent / "rpa-gateway"
    assert command.exists(), f"{command} is missing: " + SET_UP_BY_MAKE.format(".venv/.installed")
    return StdioServerParameters(
        command=str(command), args=["mcp", "--url", base_url, "--token", token]
    )


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_stdio_bridge_under_the_python_sdk(
    mcp_gateway: GatewayProcess, key: str, mode: str
) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def scenario() -> tuple[set[str], Any]:
        async with Client(bridge(mcp_gateway.base_url, key), mode=mode) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool(
                "sleeper", {"seconds": 0.6}, progress_callback=on_progress
            )
            return tools, result

    tools, result = asyncio.run(asyncio.wait_for(scenario(), CALL_BOUND))
    assert tools >= EXPECTED_TOOLS, sorted(tools)
    assert result.is_error is False, result
    assert result.structured_content is not None, result
    assert result.structured_content["status"] == "succeeded", result
    assert progress, "no notifications/progress reached the client"
    assert all(a < b for a, b in pairwise(progress)), progress


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_stdio_bridge_with_a_wrong_token_fails_clearly(
    mcp_gateway: GatewayProcess, mode: str
) -> None:
    async def scenario() -> None:
        async with Client(bridge(mcp_gateway.base_url, "not-" + new_key()[0]), mode=mode) as c:
            await c.call_tool("greet", {"name": "Ada"})

    try:
        asyncio.run(asyncio.wait_for(scenario(), CALL_BOUND))
    except TimeoutError:
        pytest.fail(f"a wrong key got no answer within {CALL_BOUND:g} s")
    except Exception as exc:
        error = innermost(exc)
    else:
        pytest.fail("a wrong key was accepted")
    assert isinstance(error, MCPError), repr(error)
    assert "key is not accepted" in str(error), repr(error)


def innermost(error: BaseException) -> BaseException:
    """The cause inside anyio's task-group ExceptionGroups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
