"""Callers' tokens never reach logs or the store."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.sse_client import exec_stream

TOKEN = "sk-LEAKCANARY-0123456789abcdef"
KEY = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"


@pytest.mark.parametrize("sealed", [False, True], ids=["memory-only", "sealed-at-rest"])
def test_token_never_in_logs_or_store(
    start_gateway: GatewayFactory, fake: FakeUpstream, sealed: bool
) -> None:
    key = {"RPA_TOKEN_KEY": KEY} if sealed else {}
    gateway = start_gateway(LOG_LEVEL="DEBUG", RPA_ACCESS_LOG="true", **key)
    scenarios = [
        {"steps": [{"status": "COMPLETED", "result": {"data": {}}}]},
        {"steps": [{"status": "FAILED", "error": "boom"}]},
        {"steps": [{"fault": "html502"}]},
        {"steps": [{"fault": "reset"}]},
        {"create": {"fault": "unauthorized"}},
        {"create": {"fault": "code5001", "msg": f"bad key {TOKEN}"}},
        # The platform echoing the bare token: in an error, in an unknown status string.
        {"steps": [{"status": "FAILED", "error": f"robot saw {TOKEN} and gave up"}]},
        {"steps": [{"status": f"ODD-{TOKEN}"}, {"status": "COMPLETED", "result": {"data": {}}}]},
    ]
    outcomes = []
    for scenario in scenarios:
        pid = f"p-{uuid.uuid4().hex[:8]}"
        fake.script(pid, create=scenario.get("create"), steps=scenario.get("steps"))
        result = exec_stream(
            gateway.base_url,
            {"project_id": pid, "sid": "s", "params": {"n": 1}},
            token=f"Bearer {TOKEN}",
        )
        outcomes.append(result.terminal)
    exec_stream(gateway.base_url, {"nope": 1}, token=TOKEN)  # a rejected request too
    gateway.stop()

    assert f"Bearer {TOKEN}" in fake.authorizations, "the token did reach the upstream"
    assert all(TOKEN not in str(outcome) for outcome in outcomes)
    assert "[redacted]" in outcomes[-3]["message"] and "[redacted]" in outcomes[-2]["message"]
    assert outcomes[-1]["code"] == 0
    log = gateway.log_text()
    assert "query fault" in log and "accepted" in log, "the log was written"
    assert "unknown upstream status 'ODD-[redacted]'" in log
    assert TOKEN not in log
    for path in gateway.database.parent.iterdir():
        assert TOKEN.encode() not in path.read_bytes(), path
    assert KEY not in log


def test_newlines_in_caller_values_cannot_forge_log_lines(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway(LOG_LEVEL="INFO")
    forged = "\n2026-01-01 00:00:00,000 ERROR rpa_gateway FORGED"
    result = exec_stream(
        gateway.base_url, {"project_id": f"p{forged}", "sid": f"s{forged}\u2028x"}, token=TOKEN
    )
    assert result.terminal["code"] == 0
    gateway.stop()
    lines = gateway.log_text().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01 00:00:00,000 ERROR")]
    accepted = [line for line in lines if "accepted" in line]
    assert len(accepted) == 1 and "\\n2026-01-01" in accepted[0] and "\\u2028" in accepted[0]


def test_the_data_directory_is_private(start_gateway: GatewayFactory, fake: FakeUpstream) -> None:
    gateway = start_gateway()
    exec_stream(gateway.base_url, {"project_id": f"p-{uuid.uuid4().hex[:8]}"}, token=TOKEN)
    data = gateway.database.parent
    assert data.stat().st_mode & 0o777 == 0o700
    files = list(data.iterdir())
    assert {f.name for f in files} >= {"rpa-gateway.db", "rpa-gateway.db-wal"}
    for file in files:
        assert file.stat().st_mode & 0o777 == 0o600, file


@pytest.mark.parametrize("token", ["t", "k"])
def test_a_short_token_is_scrubbed_as_itself_never_out_of_words(
    start_gateway: GatewayFactory, fake: FakeUpstream, token: str
) -> None:
    """The Quickstart's token is "t", make cluster's "k": messages stay readable, and the
    token still appears nowhere as itself."""
    gateway = start_gateway(XIAOWU_RPA_TIMEOUT="1.5")
    scenarios = {
        "failed": {"steps": [{"status": "FAILED", "error": "the task went wrong at step 2"}]},
        "echoed": {"steps": [{"status": "FAILED", "error": f"robot saw {token} and gave up"}]},
        "timeout": {"steps": [{"status": "RUNNING"}] * 1000},
    }
    messages = {}
    for name, scenario in scenarios.items():
        pid = f"p-{uuid.uuid4().hex[:8]}"
        fake.script(pid, steps=scenario["steps"])
        result = exec_stream(gateway.base_url, {"project_id": pid, "sid": "s"}, token=token)
        stored = httpx.get(
            f"{gateway.base_url}/rpa/v1/executions/{result.ids[0].rsplit(':', 1)[0]}",
            headers={"Authorization": token},
            timeout=10,
        ).json()["result"]["message"]
        assert stored == result.terminal["message"]  # what is stored is what was sent
        messages[name] = stored
    assert messages["failed"] == "Query task error: the task went wrong at step 2"
    assert messages["echoed"] == "Query task error: robot saw [redacted] and gave up"
    assert messages["timeout"] == "Timeout error"


def test_an_existing_data_directory_is_made_private(tmp_path: Path, fake: FakeUpstream) -> None:
    workdir = tmp_path / "gw"
    data = workdir / "data"
    data.mkdir(parents=True)
    data.chmod(0o755)  # made by hand, or by a deployment, before the first start
    gateway = GatewayProcess({**FAST, **fake.env(), "RPA_DATA_DIR": str(data)}, workdir)
    gateway.start()
    try:
        assert data.stat().st_mode & 0o777 == 0o700
    finally:
        gateway.stop()
