"""MCP tool calls in telemetry: a span per call (a child of the request's ``traceparent``,
the parent of the execution it starts) and ``rpa_mcp_calls_total{tool,outcome}``."""

from __future__ import annotations

import time

from rpa_gateway.telemetry.metrics import Instruments
from rpa_gateway.telemetry.spans import OpenSpan, SpanRecorder, traceparent


class McpCallRecord:
    __slots__ = ("_instruments", "_span", "_spans", "_tool")

    def __init__(
        self,
        tool: str,
        spans: SpanRecorder | None,
        instruments: Instruments | None,
        traceparent: str | None,
    ) -> None:
        self._tool = tool
        self._spans = spans
        self._instruments = instruments
        self._span: OpenSpan | None = (
            spans.begin(
                "mcp tools/call",
                traceparent=traceparent,
                start_ns=time.time_ns(),
                attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": tool},
            )
            if spans is not None
            else None
        )

    @property
    def traceparent(self) -> str | None:
        """This call's span as the parent of what it starts; ``None`` without traces."""
        span = self._span
        if span is None:
            return None
        context = span.context
        return traceparent(context.trace_id, context.span_id, context.trace_flags)

    def end(self, outcome: str, execution_id: str | None = None) -> None:
        if self._instruments is not None:
            self._instruments.mcp_calls.add(self._tool, outcome)
        span, self._span = self._span, None
        if span is not None and self._spans is not None:
            span.attributes["mcp.outcome"] = outcome
            if execution_id is not None:
                span.attributes["rpa.execution_id"] = execution_id
            error = outcome if outcome in ("error", "invalid") else None
            self._spans.finish(span, events=(), end_ns=time.time_ns(), error=error)
