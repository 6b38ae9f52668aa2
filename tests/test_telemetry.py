"""Traces, metrics and the Kafka trace log, checked at real receivers; secrets never leak."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST, GatewayFactory
from tests.fakes.kafka_broker import KafkaBroker
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream
from tests.store_reader import execution_row

TOKEN = "sk-TELEMETRY-CANARY-9f8e7d6c5b4a"
TOPIC = "rpa-trace"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    kafka = KafkaBroker(tmp_path / "tansu.log").start(TOPIC)
    yield kafka
    kafka.stop()


def project(fake: FakeUpstream) -> str:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(
        pid,
        steps=[
            {"status": "PENDING"},
            {"status": "RUNNING"},
            {"status": "COMPLETED", "result": {"data": {"ok": 1}}},
        ],
    )
    return pid


def traced_gateway(
    start_gateway: GatewayFactory, receiver: OtlpReceiver, **env: str
) -> GatewayProcess:
    """A gateway sending its spans to ``receiver`` every 100 ms."""
    return start_gateway(
        OTLP_ENABLE="true",
        OTLP_ENDPOINT=receiver.endpoint,
        OTLP_TRACE_SCHEDULE_DELAY_MILLIS="100",
        **env,
    )


def scrape(gateway: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gateway.base_url + "/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (n, lbls), value in samples.items()
        if n == name and all((k, v) in lbls for k, v in labels.items())
    )


def test_execution_span_is_a_child_of_the_callers_trace(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(start_gateway, receiver, OTLP_SERVICE_NAME="rpa-test")
    pid = project(fake)
    result = exec_stream(
        gateway.base_url,
        {"project_id": pid, "sid": "wf-7"},
        token=TOKEN,
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"},
    )
    assert result.terminal["code"] == 0
    execution_id = result.ids[0].rsplit(":", 1)[0]

    span = receiver.wait_for_span(
        lambda s: s.name == "rpa.execution" and s.attributes.get("execution_id") == execution_id
    )
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_SPAN)
    assert span.attributes == {
        "sid": "wf-7",
        "project_id": pid,
        "tool_id": pid,
        "execution_id": execution_id,
        "backend": "astron",
        "code": 0,
        "message": "Success",
        "upstream_id": fake.runs_for(pid)[0].id,
    }
    assert span.resource["service.name"] == "rpa-test"
    statuses = [attrs.get("status") for name, attrs in span.events if name == "rpa.state"]
    assert statuses == ["ACCEPTED", "PENDING", "RUNNING"]
    assert span.events[-1][0] == "rpa.terminal"

    children = [
        receiver.wait_for_span(
            lambda s, op=op: s.name == f"rpa.backend.{op}" and s.parent_span_id == span.span_id
        )
        for op in ("create", "query")
    ]
    assert all(child.trace_id == TRACE_ID for child in children)
    # Each upstream request carries its own call span as the parent of what the upstream does.
    for child in children:
        assert f"00-{TRACE_ID}-{child.span_id}-01" in fake.traceparents
    assert all(TOKEN.encode() not in raw for raw in receiver.raw)


def test_failures_are_error_spans(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(start_gateway, receiver)
    failing = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(failing, steps=[{"fault": "html502"}])
    result = exec_stream(gateway.base_url, {"project_id": failing}, token=TOKEN)
    assert result.terminal["code"] == 55002

    span = receiver.wait_for_span(
        lambda s: s.name == "rpa.execution" and s.attributes.get("project_id") == failing
    )
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.status == ("STATUS_CODE_ERROR", result.terminal["message"])
    assert span.duration_ns > 0
    create = receiver.wait_for_span(
        lambda s: s.name == "rpa.backend.create" and s.parent_span_id == span.span_id
    )
    assert (create.kind, create.status) == ("SPAN_KIND_CLIENT", ("STATUS_CODE_UNSET", ""))
    queries = receiver.wait_for_spans(
        lambda s: s.name == "rpa.backend.query" and s.parent_span_id == span.span_id, 3
    )
    assert len(queries) == 3  # RPA_QUERY_MAX_FAILURES in the tests' settings
    assert {q.status for q in queries} == {("STATUS_CODE_ERROR", "bad_reply")}


def test_a_call_cut_short_by_a_cancel_is_an_error_span(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(start_gateway, receiver, RPA_UPSTREAM_READ_TIMEOUT="20")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "RUNNING"}, {"fault": "slow", "seconds": 3}])
    first = exec_stream(gateway.base_url, {"project_id": pid}, token=TOKEN, stop_after_lines=2)
    execution_id = first.ids[0].rsplit(":", 1)[0]
    deadline = time.monotonic() + 10
    while not (fake.runs_for(pid) and fake.runs_for(pid)[0].queries == 2):
        assert time.monotonic() < deadline, "the second query never reached the upstream"
        time.sleep(0.02)

    response = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=15,
    )
    assert response.json()["result"]["code"] == 55004

    span = receiver.wait_for_span(
        lambda s: s.name == "rpa.execution" and s.attributes.get("execution_id") == execution_id
    )
    queries = receiver.wait_for_spans(
        lambda s: s.name == "rpa.backend.query" and s.parent_span_id == span.span_id, 2
    )
    assert sorted(q.status[0] for q in queries) == ["STATUS_CODE_ERROR", "STATUS_CODE_UNSET"]


def test_calls_are_exported_while_their_execution_runs(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = traced_gateway(start_gateway, receiver)
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "RUNNING"}] * 500)
    trace_id = uuid.uuid4().hex
    with httpx.stream(
        "POST",
        gateway.base_url + "/rpa/v1/exec",
        json={"project_id": pid},
        headers={"Authorization": TOKEN, "traceparent": f"00-{trace_id}-{PARENT_SPAN}-01"},
        timeout=30,
    ) as response:
        lines = response.iter_lines()  # kept: dropping it would close the stream
        assert next(lines).startswith("id:")
        queries = receiver.wait_for_spans(
            lambda s: s.name == "rpa.backend.query" and s.trace_id == trace_id, 3
        )
        assert not [
            s for s in receiver.spans if s.name == "rpa.execution" and s.trace_id == trace_id
        ]
    assert all(q.status == ("STATUS_CODE_UNSET", "") for q in queries)


def test_an_execution_resumed_after_a_restart_is_traced_from_its_first_poll(
    tmp_path: Path, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    settings = {
        **FAST,
        **fake.env(),
        "RPA_TOKEN_KEY": "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4",  # resume without owners
        "OTLP_ENABLE": "true",
        "OTLP_ENDPOINT": receiver.endpoint,
        "OTLP_TRACE_SCHEDULE_DELAY_MILLIS": "100",
    }
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, duration=3)
    first = GatewayProcess(settings, tmp_path).start()
    ids = exec_stream(first.base_url, {"project_id": pid}, token=TOKEN, stop_after_lines=1).ids
    execution_id = ids[0].rsplit(":", 1)[0]
    deadline = time.monotonic() + 10
    while not (execution_row(first.database, execution_id) or {}).get("upstream_id"):
        assert time.monotonic() < deadline, "the run never reached the upstream"
        time.sleep(0.02)
    first.stop(signal.SIGKILL)
    headers_before = len(fake.traceparents)

    second = GatewayProcess(settings, tmp_path).start()
    try:
        span = receiver.wait_for_span(
            lambda s: s.name == "rpa.execution" and s.attributes.get("execution_id") == execution_id
        )
    finally:
        second.stop()
    assert span.attributes["code"] == 0
    queries = receiver.wait_for_spans(
        lambda s: s.name == "rpa.backend.query" and s.parent_span_id == span.span_id, 1
    )
    # Every poll the new process made carried the resumed execution's trace upstream.
    resumed_headers = fake.traceparents[headers_before:]
    assert resumed_headers and all(span.trace_id in h for h in resumed_headers)
    assert {q.trace_id for q in queries} == {span.trace_id}


def test_the_configured_sampler_decides(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    """With ``parentbased_always_off`` only executions whose caller sampled the trace are kept."""
    gateway = traced_gateway(start_gateway, receiver, OTEL_TRACES_SAMPLER="parentbased_always_off")
    unsampled, sampled = project(fake), project(fake)
    first = len(fake.traceparents)
    untraced = exec_stream(gateway.base_url, {"project_id": unsampled}, token=TOKEN)
    assert untraced.terminal["code"] == 0
    unsampled_headers = fake.traceparents[first:]
    traced = exec_stream(
        gateway.base_url,
        {"project_id": sampled},
        token=TOKEN,
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"},
    )
    assert traced.terminal["code"] == 0

    # Spans leave in the order they end: once the later execution's span is here, the
    # earlier one's would be too.
    receiver.wait_for_span(
        lambda s: s.name == "rpa.execution" and s.attributes.get("project_id") == sampled
    )
    with receiver._lock:
        spans = list(receiver.spans)
    assert not [s for s in spans if s.attributes.get("project_id") == unsampled]
    assert {s.trace_id for s in spans} == {TRACE_ID}
    # The unsampled execution still passes its trace context on, marked not sampled.
    assert len(unsampled_headers) >= 2  # its create and queries
    assert all(h.startswith("00-") and h.endswith("-00") for h in unsampled_headers)


def test_metrics_on_prometheus_and_otlp(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver
) -> None:
    gateway = start_gateway(
        RPA_PROMETHEUS_ENABLE="true",
        OTLP_ENABLE="true",
        OTLP_ENDPOINT=receiver.endpoint,
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS="200",
    )
    pid = project(fake)
    failing = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(failing, steps=[{"fault": "html502"}])
    for _ in range(3):
        assert exec_stream(gateway.base_url, {"project_id": pid}, token=TOKEN).terminal["code"] == 0
    assert (
        exec_stream(gateway.base_url, {"project_id": failing}, token=TOKEN).terminal["code"]
        == 55002
    )

    samples = scrape(gateway)
    assert metric(samples, "rpa_executions_total", code="0", project_id=pid) == 3
    assert metric(samples, "rpa_executions_total", code="55002", project_id=failing) == 1
    assert metric(samples, "rpa_execution_duration_seconds_count", project_id=pid) == 3
    assert metric(samples, "rpa_active_executions") == 0
    assert metric(samples, "rpa_open_streams") == 0
    assert metric(samples, "rpa_upstream_request_duration_seconds_count", operation="create") >= 4
    assert metric(samples, "rpa_upstream_errors_total", operation="query", kind="bad_reply") == 3
    assert TOKEN not in httpx.get(gateway.base_url + "/metrics").text

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "rpa_executions" not in receiver.metric_names:
        time.sleep(0.1)
    assert {
        "rpa_executions",
        "rpa_execution_duration",
        "rpa_upstream_request_duration",
    } <= receiver.metric_names


def test_open_streams_and_active_executions_while_running(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(RPA_PROMETHEUS_ENABLE="true")
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "RUNNING"}] * 200)
    with httpx.stream(
        "POST",
        gateway.base_url + "/rpa/v1/exec",
        json={"project_id": pid},
        headers={"Authorization": TOKEN},
        timeout=30,
    ) as response:
        lines = response.iter_lines()  # kept: dropping it would close the stream
        assert next(lines).startswith("id:")
        samples = scrape(gateway)
        assert metric(samples, "rpa_open_streams") == 1
        assert metric(samples, "rpa_active_executions") == 1


def test_metrics_endpoint_is_off_by_default(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.base_url + "/metrics")
    assert response.status_code == 404
    assert "RPA_PROMETHEUS_ENABLE" in response.json()["message"]


def test_kafka_record_per_execution_without_secrets(
    start_gateway: GatewayFactory, fake: FakeUpstream, broker: KafkaBroker
) -> None:
    gateway = start_gateway(KAFKA_SERVERS=broker.servers, KAFKA_TOPIC=TOPIC)
    pid = project(fake)
    result = exec_stream(
        gateway.base_url,
        {"project_id": pid, "sid": "wf-k", "params": {"city": "Hefei"}},
        token=TOKEN,
    )
    assert result.terminal["code"] == 0
    (record,) = broker.records(TOPIC, 1)
    assert record["sid"] == "wf-k" and record["sub"] == "rpa-server"
    assert record["version"] == "v2.0.0"
    assert record["status"] == {"code": 0, "message": "Success"}
    assert json.loads(record["question"])["params"] == {"city": "Hefei"}
    assert json.loads(record["answer"]) == result.terminal
    assert record["end_time"] >= record["start_time"] > 0
    assert record["duration"] == record["end_time"] - record["start_time"]
    assert record["srv_tag"] == {"tool_id": pid}
    assert set(record) >= {
        "service_id",
        "app_id",
        "uid",
        "chat_id",
        "caller",
        "log_caller",
        "first_frame_duration",
        "srv",
        "usage",
        "trace",
    }
    assert TOKEN not in json.dumps(record)


def test_a_dead_broker_never_touches_streams_and_drops_are_counted(
    start_gateway: GatewayFactory, fake: FakeUpstream, broker: KafkaBroker
) -> None:
    gateway = start_gateway(
        KAFKA_SERVERS=broker.servers,
        KAFKA_TOPIC=TOPIC,
        KAFKA_TIMEOUT="1",
        RPA_PROMETHEUS_ENABLE="true",
    )
    pid = project(fake)
    assert exec_stream(gateway.base_url, {"project_id": pid}).terminal["code"] == 0
    broker.records(TOPIC, 1)
    broker.stop()

    started = time.monotonic()
    for _ in range(5):
        assert exec_stream(gateway.base_url, {"project_id": pid}).terminal["code"] == 0
    assert time.monotonic() - started < 10, "streams went on at their own pace"

    deadline = time.monotonic() + 20
    dropped = 0.0
    while time.monotonic() < deadline:
        samples = scrape(gateway)
        dropped = metric(samples, "rpa_kafka_records_total", outcome="dropped")
        if dropped >= 5:
            break
        time.sleep(0.2)
    assert dropped == 5
    assert metric(samples, "rpa_kafka_records_total", outcome="sent") == 1
    # librdkafka's own complaints come through the service's log, in its format.
    log = gateway.log_text()
    assert [line for line in log.splitlines() if line.startswith("%")] == []
    assert " rpa_gateway.kafka " in log


def test_json_logs_carry_execution_and_sid_and_no_secrets(
    start_gateway: GatewayFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    key = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"
    log_dir = tmp_path / "logs"
    gateway = start_gateway(
        RPA_LOG_JSON="true",
        LOG_PATH=str(log_dir),
        LOG_LEVEL="DEBUG",
        RPA_TOKEN_KEY=key,
        RPA_ACCESS_LOG="true",
    )
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, create={"fault": "code5001", "msg": f"key Bearer {TOKEN} is not valid"})
    result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "wf-log"}, token=TOKEN)
    assert result.terminal["code"] == 55001
    execution_id = result.ids[0].rsplit(":", 1)[0]
    gateway.stop()

    lines = (log_dir / "rpa-gateway.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    mine = [e for e in entries if e["execution_id"] == execution_id]
    assert {e["sid"] for e in mine} == {"wf-log"}
    assert any("accepted" in e["message"] for e in mine)
    assert any("create failed" in e["message"] for e in mine)
    everything = "\n".join(lines) + gateway.log_text()
    assert TOKEN not in everything and key not in everything


def test_shutdown_is_bounded_when_every_telemetry_receiver_is_gone(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    from tests.gateway_process import free_port

    gone = f"127.0.0.1:{free_port()}"  # nothing listens there
    gateway = start_gateway(
        OTLP_ENABLE="true",
        OTLP_ENDPOINT=gone,
        OTLP_METRIC_EXPORT_INTERVAL_MILLIS="200",
        KAFKA_SERVERS=gone,
        RPA_PROMETHEUS_ENABLE="true",
    )
    assert exec_stream(gateway.base_url, {"project_id": project(fake)}).terminal["code"] == 0
    started = time.monotonic()
    assert gateway.stop(timeout=10) == -signal.SIGTERM  # the harness fails a hang itself
    assert time.monotonic() - started < 10
    assert "telemetry did not flush within 5 s" in gateway.log_text()


def test_a_token_the_platform_echoes_reaches_no_span_and_no_kafka_record(
    start_gateway: GatewayFactory, fake: FakeUpstream, receiver: OtlpReceiver, broker: KafkaBroker
) -> None:
    gateway = traced_gateway(start_gateway, receiver, KAFKA_SERVERS=broker.servers)
    echoing = [f"p-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    fake.script(echoing[0], steps=[{"status": "FAILED", "error": f"saw {TOKEN} and stopped"}])
    fake.script(echoing[1], steps=[{"status": f"ODD-{TOKEN}"}, {"status": "COMPLETED"}])
    for pid in echoing:
        exec_stream(gateway.base_url, {"project_id": pid}, token=TOKEN)
        receiver.wait_for_span(
            lambda s, pid=pid: s.name == "rpa.execution" and s.attributes.get("project_id") == pid
        )
    records = broker.records(TOPIC, 2)
    assert {r["srv_tag"]["tool_id"] for r in records} >= set(echoing)
    assert TOKEN not in json.dumps(records)
    assert all(TOKEN.encode() not in raw for raw in receiver.raw)
