"""A client that goes away neither stops nor loses its execution."""

from __future__ import annotations

import uuid

from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream
from tests.store_reader import event_kinds, wait_for_finished


def test_disconnect_after_first_event_still_finishes_and_is_recorded(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(
        pid,
        steps=[{"status": "PENDING"}] * 5
        + [{"status": "COMPLETED", "result": {"data": {"mail": "sent"}}}],
    )
    partial = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, stop_after_lines=1)
    assert partial.frames == []
    execution_id = partial.ids[0].rsplit(":", 1)[0]

    row = wait_for_finished(gateway.database, execution_id)
    assert (row["status"], row["code"], row["message"], row["data"]) == (
        "SUCCEEDED",
        0,
        "Success",
        '{"mail":"sent"}',
    )
    (run,) = fake.runs_for(pid)
    assert run.queries == 6, "the robot was watched to its end with nobody listening"
    assert fake.creates_for(pid) == 1
    kinds = event_kinds(gateway.database, execution_id)
    assert kinds.count("terminal") == 1 and kinds[-1] == "terminal"
