"""MCP tool calls in telemetry, at real receivers: a span per call in the caller's trace (and
the execution's span under it), ``rpa_mcp_calls_total{tool,outcome}``, log lines naming
the execution; the caller's key in none of them."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import GatewayFactory
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.fakes.rpa_upstream import FakeUpstream
from tests.mcp_support import messages, post
from tests.test_telemetry import PARENT_SPAN, TRACE_ID, metric, receiver, scrape

KEY = "sk-MCP-TELEMETRY-CANARY-1a2b3c4d"
__all__ = ["receiver"]  # the fixture, shared with test_telemetry


def tools_call(base_url: str, name: str, arguments: dict[str, Any], **extra: str) -> Any:
    response = post(
        base_url,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        },
        token=KEY,
        extra={"MCP-Protocol-Version": "2025-11-25", **extra},
    )
    return messages(response)[-1]


def test_a_tool_call_is_a_span_a_count_and_a_log_line_without_the_key(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = start_gateway(
        RPA_PROMETHEUS_ENABLE="true",
        OTLP_ENABLE="true",
        OTLP_ENDPOINT=receiver.endpoint,
        OTLP_TRACE_SCHEDULE_DELAY_MILLIS="100",
        LOG_LEVEL="INFO",
        RPA_MCP_WAIT_SECONDS="10",
    )
    project = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(project, steps=[{"status": "COMPLETED", "result": {"data": {"ok": 1}}}])
    answer = tools_call(
        gateway.base_url,
        "rpa_run",
        {"project_id": project},
        traceparent=f"00-{TRACE_ID}-{PARENT_SPAN}-01",
    )
    execution_id = answer["result"]["structuredContent"]["execution_id"]
    assert answer["result"]["structuredContent"]["status"] == "succeeded"
    invalid = tools_call(gateway.base_url, "rpa_run", {"project": "misspelt"})
    assert invalid["error"]["code"] == -32602

    call = receiver.wait_for_span(
        lambda s: s.name == "mcp tools/call" and s.attributes.get("mcp.outcome") == "succeeded"
    )
    assert (call.trace_id, call.parent_span_id) == (TRACE_ID, PARENT_SPAN)
    assert call.attributes["gen_ai.tool.name"] == "rpa_run"
    assert call.attributes["rpa.execution_id"] == execution_id
    run = receiver.wait_for_span(
        lambda s: s.name == "rpa.execution" and s.attributes.get("execution_id") == execution_id
    )
    assert (run.trace_id, run.parent_span_id) == (TRACE_ID, call.span_id)  # under the call
    receiver.wait_for_span(
        lambda s: s.name == "mcp tools/call" and s.attributes.get("mcp.outcome") == "invalid"
    )

    samples = scrape(gateway)
    assert metric(samples, "rpa_mcp_calls_total", tool="rpa_run", outcome="succeeded") == 1
    assert metric(samples, "rpa_mcp_calls_total", tool="rpa_run", outcome="invalid") == 1
    logged = [line for line in gateway.log_text().splitlines() if "MCP call rpa_run" in line]
    assert logged and execution_id in logged[0]
    assert KEY not in gateway.log_text()
    assert KEY not in str(receiver.raw)
