"""Who may call: RPA_API_KEYS, and the local backend's loopback default without them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.astron_node import NodeFailed, node_call
from tests.conftest import FAST, GatewayFactory
from tests.fakes.rpa_upstream import FakeUpstream, new_project_id
from tests.feed_client import Feed
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create, events, get
from tests.sse_client import exec_stream


def new_key() -> tuple[str, str]:
    printed = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "apikey"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    key, entry = (line.rsplit(" ", 1)[1] for line in printed)
    return key, entry


def test_with_api_keys_only_those_keys_are_callers_on_every_route(
    start_gateway: GatewayFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    (key_a, entry_a), (key_b, _) = new_key(), new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators\n\n{key_b}\n")
    assert entry_a.startswith("sha256:") and key_a not in entry_a
    gateway = start_gateway(RPA_API_KEYS=entry_a, RPA_API_KEYS_FILE=str(keys_file))
    pid = new_project_id()

    assert node_call(gateway.base_url, key_a, {"project_id": pid, "sid": "s"})["echo"] == {}
    assert node_call(gateway.base_url, f"Bearer {key_b}", {"project_id": pid})["echo"] == {}
    creates = fake.creates_for(pid)
    for stranger in ("t-secret", key_a + "x", entry_a):
        try:
            node_call(gateway.base_url, stranger, {"project_id": pid})
        except NodeFailed as failure:
            assert "not accepted" in str(failure)
        else:
            raise AssertionError(f"{stranger!r} was let in")
    assert fake.creates_for(pid) == creates, "nothing ran for a stranger"

    execution_id = httpx.get(gateway.base_url + "/rpa/v1/executions", headers=auth(key_a)).json()[
        "items"
    ][0]["id"]
    routes = [
        ("GET", "/rpa/v1/executions"),
        ("POST", "/rpa/v1/executions"),
        ("GET", f"/rpa/v1/executions/{execution_id}"),
        ("GET", f"/rpa/v1/executions/{execution_id}/events"),
        ("POST", f"/rpa/v1/executions/{execution_id}/cancel"),
        ("GET", "/rpa/v1/projects"),
    ]
    for method, path in routes:
        refused = httpx.request(method, gateway.base_url + path, headers=auth("t-secret"))
        assert refused.status_code == 401, (method, path)
        assert refused.json()["error"] == "unauthorized"
    assert httpx.get(gateway.base_url + "/rpa/v1/ready").status_code == 200, "probes stay open"


def test_a_malformed_key_entry_stops_startup_naming_it(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "serve"],
        env={"RPA_API_KEYS": "sha256:abc", "RPA_DATA_DIR": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "RPA_API_KEYS entry 1: sha256: takes 64 hex digits" in completed.stderr


def test_local_backend_without_keys_listens_on_loopback_only(tmp_path: Path) -> None:
    gateway = GatewayProcess({**FAST, "RPA_BACKEND": "local"}, tmp_path)
    del gateway.env["SERVICE_HOST"]  # the default a user gets with `make run`
    gateway.start()
    try:
        log = gateway.log_text()
        assert "listening on 127.0.0.1 only" in log
        assert f"Uvicorn running on http://127.0.0.1:{gateway.port}" in log
    finally:
        gateway.stop()


def test_local_backend_with_keys_listens_everywhere(tmp_path: Path) -> None:
    _, entry = new_key()
    gateway = GatewayProcess({**FAST, "RPA_BACKEND": "local", "RPA_API_KEYS": entry}, tmp_path)
    del gateway.env["SERVICE_HOST"]
    gateway.start()
    try:
        assert f"Uvicorn running on http://0.0.0.0:{gateway.port}" in gateway.log_text()
    finally:
        gateway.stop()


def test_an_operator_key_sees_every_caller_s_executions_and_may_cancel_them(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    (alice, alice_entry), (bob, bob_entry), (admin, admin_entry) = new_key(), new_key(), new_key()
    gateway = start_gateway(RPA_API_KEYS=f"{alice_entry},{bob_entry}", RPA_ADMIN_KEYS=admin_entry)
    base = gateway.base_url
    pid = new_project_id()
    fake.script(pid, gated=True, steps=[{"status": "COMPLETED", "result": {}}])

    def start(token: str) -> str:
        created = create(base, {"project_id": pid, "sid": "s"}, token)
        assert created.status_code == 202, created.text
        execution_id: str = created.json()["id"]
        return execution_id

    everyone = Feed(base, admin)
    alices, bobs = start(alice), start(bob)
    fake.wait_for_creates(pid, 2)
    try:
        heard = {everyone.next()[1]["id"] for _ in range(4)}  # ACCEPTED, PENDING of each
        assert heard == {alices, bobs}
    finally:
        everyone.close()

    def listed(token: str) -> list[str]:
        page = httpx.get(f"{base}/rpa/v1/executions", headers=auth(token), timeout=10)
        assert page.status_code == 200, page.text
        return [item["id"] for item in page.json()["items"]]

    assert listed(alice) == [alices] and listed(bob) == [bobs]
    assert listed(admin) == [bobs, alices]  # every caller's, newest first
    assert get(base, bobs, alice).status_code == 404  # callers still see only their own
    assert get(base, alices, admin).json()["status"] == "PENDING"

    cancelled = httpx.post(
        f"{base}/rpa/v1/executions/{alices}/cancel", headers=auth(admin), timeout=20
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["result"]["code"]) == ("CANCELLED", 55004)
    # One of its two runs cancelled upstream, counted by its own runs (the fake is the
    # session's: every earlier test's cancels are in it too).
    assert sum(fake.cancels.count(run.id) for run in fake.runs_for(pid)) == 1

    fake.open_gate(pid)
    _, frames, _ = events(base, bobs, admin)
    assert frames[-1]["event"] == "terminal" and frames[-1]["code"] == 0
    assert get(base, alices, alice).json()["status"] == "CANCELLED"


def test_a_keys_file_takes_comments_after_keys(
    start_gateway: GatewayFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    (node, node_entry), (cli, _) = new_key(), new_key()
    keys = tmp_path / "keys"
    keys.write_text(f"# callers\n{node_entry}  # astron-agent's node\n{cli}\t# the CLI, in clear\n")
    gateway = start_gateway(RPA_API_KEYS_FILE=str(keys))
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {}}])
    for token in (node, cli):
        assert create(gateway.base_url, {"project_id": pid}, token).status_code == 202
    assert create(gateway.base_url, {"project_id": pid}, "stranger").status_code == 401


def test_an_operator_resumes_any_caller_s_stream_and_replays_are_marked(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    (alice, alice_entry), (admin, admin_entry) = new_key(), new_key()
    gateway = start_gateway(RPA_API_KEYS=alice_entry, RPA_ADMIN_KEYS=admin_entry)
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {"data": {"ok": 1}}}])
    key = {"Idempotency-Key": f"k-{pid}"}
    first = exec_stream(gateway.base_url, {"project_id": pid}, token=alice, headers=key)
    again = exec_stream(gateway.base_url, {"project_id": pid}, token=alice, headers=key)
    assert first.terminal["code"] == again.terminal["code"] == 0
    assert "idempotent-replayed" not in first.headers
    assert again.headers.get("idempotent-replayed") == "true"
    resumed = exec_stream(
        gateway.base_url, {}, token=admin, headers={"Last-Event-ID": f"{first.ids[0]}"}
    )
    assert resumed.status_code == 200 and resumed.terminal == first.terminal


def test_the_keys_file_is_reloaded_on_change_and_on_sighup(
    start_gateway: GatewayFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Revoking a key needs no restart; the log counts keys and never shows one."""
    (kept, _), (revoked, _), (added, _), (later, _) = new_key(), new_key(), new_key(), new_key()
    keys = tmp_path / "keys"
    keys.write_text(f"{kept}\n{revoked}\n")
    gateway = start_gateway(RPA_API_KEYS_FILE=str(keys))
    pid = new_project_id()
    fake.script(pid, steps=[{"status": "COMPLETED", "result": {}}])

    def admitted(token: str) -> bool:
        status = create(gateway.base_url, {"project_id": pid}, token).status_code
        assert status in (202, 401), status
        return status == 202

    def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, gateway.log_text()[-2000:]
            time.sleep(0.05)

    assert admitted(kept) and admitted(revoked) and not admitted(added)
    # Replaced the way an operator should (a new file renamed over the old one).
    replacement = tmp_path / "keys.new"
    replacement.write_text(f"{kept}\n{added}\n")
    replacement.rename(keys)
    until(lambda: not admitted(revoked))
    assert admitted(kept) and admitted(added)

    # Half-written (empty) or broken: the keys stay as they were.
    keys.write_text("")
    until(lambda: "holds no key; the keys stay as they were" in gateway.log_text())
    keys.write_text("sha256:not-hex\n")
    until(lambda: "sha256: takes 64 hex digits" in gateway.log_text())
    assert admitted(kept) and admitted(added)

    # SIGHUP, with nothing for the check to notice: same size, same time, same file.
    keys.write_text(f"{kept}\n{added}\n")
    until(lambda: gateway.log_text().count("RPA_API_KEYS_FILE reloaded") == 2)
    stamp = keys.stat()
    keys.write_text(f"{kept}\n{later}\n")  # `later` is as long as `added`
    os.utime(keys, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    time.sleep(1.5)  # a check or more: they see no change
    assert admitted(added) and not admitted(later)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGHUP)
    until(lambda: admitted(later))
    assert not admitted(added)
    log = gateway.log_text()
    assert "RPA_API_KEYS_FILE reloaded (SIGHUP): 2 keys admitted (2 before)" in log
    for key in (kept, revoked, added, later):
        assert key not in log
