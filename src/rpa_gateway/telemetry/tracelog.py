"""The per-execution trace record on Kafka, in the reference's format, never blocking.

``produce`` only appends to librdkafka's bounded local queue; a full queue drops
the record (counted) instead of waiting, and records the broker does not take
within ``KAFKA_TIMEOUT`` are dropped by librdkafka (counted by the delivery
callback).  Callbacks run when ``poll`` is called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from rpa_gateway.executions import Event, Execution

log = logging.getLogger(__name__)

SUB = "rpa-server"
RECORD_VERSION = "v2.0.0"

Outcome = Callable[[str, str], None]  # (outcome, reason) with outcome "sent" or "dropped"


def trace_record(
    execution: Execution, terminal: Event, events: list[Event], service_id: str, backend: str
) -> dict[str, Any]:
    """The reference's record for one finished execution; ``question`` carries no secrets."""
    request = execution.request
    start_ms = int(execution.created_at * 1000)
    end_ms = int(terminal.at * 1000)
    first_change = next((e.at for e in events if e.seq > 1), terminal.at)
    question = {
        "project_id": request.project_id,
        "sid": request.sid,
        "params": request.params,
        "exec_position": request.exec_position,
        "version": request.version,
    }
    code, message = terminal.data.get("code"), terminal.data.get("message", "")
    answer = {
        "code": code,
        "message": message,
        "sid": request.sid,
        "data": terminal.data.get("data"),
    }
    return {
        "service_id": service_id,
        "sid": request.sid,
        "app_id": "",
        "uid": "",
        "chat_id": "",
        "sub": SUB,
        "caller": "",
        "log_caller": "",
        "question": json.dumps(question, ensure_ascii=False),
        "answer": json.dumps(answer, ensure_ascii=False),
        "start_time": start_ms,
        "end_time": end_ms,
        "duration": end_ms - start_ms,
        "first_frame_duration": int((first_change - execution.created_at) * 1000),
        "srv": {
            "execution_id": execution.id,
            "project_id": request.project_id,
            "backend": backend,
            "upstream_id": execution.upstream_id,
        },
        "srv_tag": {"tool_id": request.project_id},
        "status": {"code": code, "message": message},
        "usage": {
            "question_tokens": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
        },
        "version": RECORD_VERSION,
        "trace": [
            {
                "seq": e.seq,
                "kind": e.kind.value,
                "status": e.data.get("status"),
                "time": int(e.at * 1000),
            }
            for e in events
        ],
    }


class KafkaTraceLog:
    def __init__(
        self, servers: str, topic: str, *, timeout: float, queue_size: int, on_outcome: Outcome
    ) -> None:
        self._topic = topic
        self._on_outcome = on_outcome
        self._producer = Producer(
            {
                "bootstrap.servers": servers,
                "queue.buffering.max.messages": queue_size,
                "message.timeout.ms": int(timeout * 1000),
                "linger.ms": 20,
                "log.connection.close": False,
            },
            # librdkafka's own lines (a broker down, ...) through our log handlers, in our
            # format and redaction, not raw on stderr; served by the producer's poll.
            logger=logging.getLogger("rpa_gateway.kafka"),
        )

    def send(self, record: dict[str, Any]) -> None:
        value = json.dumps(record, ensure_ascii=False).encode()
        try:
            self._producer.produce(self._topic, value=value, on_delivery=self._delivered)
        except BufferError:
            self._on_outcome("dropped", "queue_full")
        except Exception as exc:  # librdkafka refusing a record must not reach the stream
            log.warning("kafka record not queued: %s", type(exc).__name__)
            self._on_outcome("dropped", "refused")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._on_outcome("sent", "")
        else:
            self._on_outcome("dropped", "undelivered")

    def poll(self) -> None:
        """Serve delivery callbacks (call it often: they are how outcomes are counted)."""
        self._producer.poll(0)

    def close(self, timeout: float = 2.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d kafka records not delivered at shutdown", remaining)
