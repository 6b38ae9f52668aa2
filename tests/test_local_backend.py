"""The local backend: project runs as process groups, their protocol, limits and queueing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.gateway_process import GatewayProcess
from tests.local_projects import group_alive, make_project, rss_kb, wait_for_file
from tests.native_client import auth, create, events, get
from tests.sse_client import exec_stream
from tests.store_reader import wait_for_finished

# A project that records its process group, then starts a grandchild in the same group.
IGNORES_SIGTERM = """
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""
SPAWNS_AND_WAITS = """
    import json, os, subprocess, sys, time
    params = json.load(sys.stdin)
    open(params["pid_file"], "w").write(str(os.getpgid(0)))
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(json.dumps({"event": "progress", "message": "working"}), flush=True)
    time.sleep(120)
"""


@pytest.fixture
def local(start_gateway: GatewayFactory, tmp_path: Path):  # type: ignore[no-untyped-def]
    projects = tmp_path / "projects"
    projects.mkdir()

    def start(**env: str) -> GatewayProcess:
        return start_gateway(
            upstream=False,
            RPA_BACKEND="local",
            RPA_PROJECTS_DIR=str(projects),
            RPA_LOCAL_KILL_GRACE="0.5",
            **env,
        )

    start.projects = projects  # type: ignore[attr-defined]
    return start


def test_protocol_progress_result_and_logs(local) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "proto",
        """
        import json, os, sys
        params = json.load(sys.stdin)
        assert json.loads(os.environ["RPA_PARAMS"]) == params
        print("starting up")
        print(json.dumps({"event": "progress", "message": "half", "percent": 50}), flush=True)
        print("not json {")
        print(json.dumps({"event": "result", "data": {"echo": params}}))
    """,
    )
    gateway = local()
    body = {"project_id": "proto", "sid": "s", "params": {"k": [1, 2]}}
    plain = exec_stream(gateway.base_url, body)
    assert plain.terminal == {
        "code": 0,
        "message": "Success",
        "sid": "s",
        "data": {"echo": {"k": [1, 2]}},
    }
    with_progress = exec_stream(gateway.base_url, body, params={"progress": "true"})
    assert with_progress.frames[0]["data"] == {"progress": {"message": "half", "percent": 50.0}}
    assert with_progress.frames[-1]["code"] == 0 and len(with_progress.frames) == 2

    execution_id = plain.ids[0].rsplit(":", 1)[0]
    view = get(gateway.base_url, execution_id).json()
    assert view["logs"] == ["starting up", "not json {"]
    _, frames, _ = events(gateway.base_url, execution_id)
    assert [f["event"] for f in frames].count("progress") == 1


@pytest.mark.parametrize(
    ("script", "code", "message"),
    [
        (
            "import sys; print('oops', file=sys.stderr); sys.exit(3)",
            55002,
            "Query task error: project exited with code 3: oops",
        ),
        ("print('no result here')", 55002, "project exited without a result line"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            55002,
            "project was killed by signal 9",
        ),
    ],
)
def test_failures_report_why(local, script: str, code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    make_project(local.projects, "failing", script)
    result = exec_stream(local().base_url, {"project_id": "failing"})
    assert result.terminal["code"] == code
    assert message in result.terminal["message"]


def test_missing_command_fails_cleanly(local) -> None:  # type: ignore[no-untyped-def]
    folder = local.projects / "broken"
    folder.mkdir()
    (folder / "project.toml").write_text('command = ["/nonexistent/binary"]\n')
    result = exec_stream(local().base_url, {"project_id": "broken"})
    assert result.terminal["code"] == 55002
    assert "project could not run" in result.terminal["message"]


def test_project_timeout_kills_the_whole_group(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(local.projects, "slow", SPAWNS_AND_WAITS, timeout=1)
    pid_file = tmp_path / "pgid"
    result = exec_stream(
        local().base_url, {"project_id": "slow", "params": {"pid_file": str(pid_file)}}
    )
    assert result.terminal == {
        "code": 55003,
        "message": "Timeout error: project timeout of 1 s passed",
        "sid": result.terminal["sid"],
        "data": None,
    }
    assert group_alive(int(wait_for_file(pid_file))) == []


def test_cancel_kills_the_group_even_when_it_ignores_sigterm(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "stubborn",
        IGNORES_SIGTERM + SPAWNS_AND_WAITS,
    )
    gateway = local()
    pid_file = tmp_path / "pgid"
    view = create(
        gateway.base_url, {"project_id": "stubborn", "params": {"pid_file": str(pid_file)}}
    ).json()
    pgid = int(wait_for_file(pid_file))
    assert group_alive(pgid)
    cancelled = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{view['id']}/cancel",
        headers=auth("t-secret"),
        timeout=20,
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["result"]["code"] == 55004
    assert group_alive(pgid) == []


CHILD_TRAPS_SIGTERM = r"""
    import json, subprocess, sys, time
    params = json.load(sys.stdin)
    child = (
        "import signal, sys, time\n"
        "def leave(*_):\n"
        "    open(sys.argv[1], 'w').write('child got SIGTERM')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, leave)\n"
        "open(sys.argv[2], 'w').write('ready')\n"
        "time.sleep(120)\n"
    )
    subprocess.Popen([sys.executable, "-c", child, params["marker"], params["ready"]])
    time.sleep(120)
"""


def test_a_cancel_sends_sigterm_to_the_whole_group_before_it_kills(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A child in the run's group gets SIGTERM first, so it can clean up (close a browser,
    save its work): the SIGKILL that follows the grace period would hide a SIGTERM sent
    to the leader alone."""
    make_project(local.projects, "careful", CHILD_TRAPS_SIGTERM)
    gateway = local()
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    view = create(
        gateway.base_url,
        {"project_id": "careful", "params": {"marker": str(marker), "ready": str(ready)}},
    ).json()
    wait_for_file(ready)  # the child's handler is in place
    cancelled = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{view['id']}/cancel",
        headers=auth("t-secret"),
        timeout=20,
    )
    assert cancelled.status_code == 200
    assert wait_for_file(marker) == "child got SIGTERM"


def test_deadline_cancels_the_run(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(local.projects, "endless", SPAWNS_AND_WAITS)
    pid_file = tmp_path / "pgid"
    result = exec_stream(
        local(XIAOWU_RPA_TIMEOUT="1").base_url,
        {"project_id": "endless", "params": {"pid_file": str(pid_file)}},
    )
    assert result.terminal["code"] == 55003
    assert group_alive(int(wait_for_file(pid_file))) == []


@pytest.mark.parametrize(
    "project_id", ["../outside", "/etc", "a/b", "..", ".hidden", "x" * 300, "escape", "missing"]
)
def test_path_tricks_are_rejected_before_anything_runs(
    local,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    project_id: str,
) -> None:
    outside = tmp_path / "outside"
    make_project(tmp_path, "outside", "open('ran', 'w').write('x')")
    (local.projects / "escape").symlink_to(outside)
    gateway = local()
    result = exec_stream(gateway.base_url, {"project_id": project_id})
    assert result.status_code == 422
    assert not (outside / "ran").exists()


def test_params_schema_mismatch_is_422_naming_the_field(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    make_project(
        local.projects,
        "typed",
        f"open({str(marker)!r}, 'w').write('x')",
        schema={
            "type": "object",
            "required": ["count"],
            "properties": {"count": {"type": "integer", "minimum": 1}},
        },
    )
    gateway = local()
    for params, field in [
        ({}, "params.count"),  # the missing property itself
        ({"count": "3"}, "params.count"),
        ({"count": 0}, "params.count"),
    ]:
        result = exec_stream(gateway.base_url, {"project_id": "typed", "params": params})
        assert result.status_code == 422
        assert result.terminal["fields"] == [field]
    assert not marker.exists()


def test_a_result_breaking_the_output_schema_fails_naming_the_field(local) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "greets",
        'import json; print(json.dumps({"event": "result", "data": {"hello": "x"}}))',
        output_schema={
            "type": "object",
            "required": ["greeting"],
            "properties": {"greeting": {"type": "string"}},
        },
    )
    gateway = local()
    result = exec_stream(gateway.base_url, {"project_id": "greets", "params": {}})
    assert result.terminal["code"] == 55002
    assert "result.greeting" in result.terminal["message"]  # the missing property itself


def test_capacity_queues_fifo_with_positions(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    order = tmp_path / "order"
    release = tmp_path / "release"
    make_project(
        local.projects,
        "gate",
        f"""
        import json, os, sys, time
        name = json.load(sys.stdin)["name"]
        with open({str(order)!r}, "a") as f:
            f.write(name + "\\n")
        while not os.path.exists({str(release)!r}):
            time.sleep(0.02)
        print(json.dumps({{"event": "result", "data": {{"name": name}}}}))
    """,
    )
    gateway = local(RPA_LOCAL_MAX_RUNS="1")
    ids = [
        create(gateway.base_url, {"project_id": "gate", "params": {"name": n}}).json()["id"]
        for n in ("a", "b", "c")
    ]
    wait_for_file(order)
    views = [get(gateway.base_url, i).json() for i in ids]
    assert [v["queue_position"] for v in views] == [None, 1, 2]
    assert [v["status"] for v in views] == ["RUNNING", "PENDING", "PENDING"]
    listed = httpx.get(
        gateway.base_url + "/rpa/v1/executions", headers=auth("t-secret"), timeout=10
    ).json()["items"]
    positions = {item["id"]: item["queue_position"] for item in listed}
    assert [positions[i] for i in ids] == [None, 1, 2]  # the list says it too
    release.write_text("go")
    for execution_id in ids:
        _, frames, _ = events(gateway.base_url, execution_id)
        assert frames[-1]["code"] == 0
    assert order.read_text().split() == ["a", "b", "c"]


def test_flooding_output_cannot_exhaust_memory(local) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "flood",
        """
        import json, sys
        line = "x" * 1000 + "\\n"
        for _ in range(100_000):            # 100 MB of log lines
            sys.stdout.write(line)
        sys.stdout.write("y" * 50_000_000)  # one 50 MB line
        sys.stdout.write("\\n")
        for i in range(20_000):             # a progress storm
            print(json.dumps({"event": "progress", "message": str(i)}))
        print(json.dumps({"event": "result", "data": {"survived": True}}))
    """,
    )
    gateway = local()
    assert gateway.process is not None
    before = rss_kb(gateway.process.pid)
    result = exec_stream(gateway.base_url, {"project_id": "flood"}, timeout=120)
    assert result.terminal["data"] == {"survived": True}
    grown_mb = (rss_kb(gateway.process.pid) - before) / 1024
    assert grown_mb < 40, f"the service grew by {grown_mb:.0f} MB"
    view = get(gateway.base_url, result.ids[0].rsplit(":", 1)[0]).json()
    assert len(view["logs"]) == 200
    assert all(len(line) <= 1000 for line in view["logs"])
    _, frames, _ = events(gateway.base_url, view["id"])
    assert len([f for f in frames if f["event"] == "progress"]) < 200, "progress is throttled"


def test_runs_push_their_end_without_polling(local) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "quick",
        """
        import json
        print(json.dumps({"event": "result", "data": {}}))
    """,
    )
    gateway = local(RPA_POLL_FIRST_DELAY="30", XIAOWU_RPA_TASK_QUERY_INTERVAL="30")
    started = time.monotonic()
    assert exec_stream(gateway.base_url, {"project_id": "quick"}).terminal["code"] == 0
    assert time.monotonic() - started < 10, "a polled run would wait 30 s"


def test_a_run_dies_with_the_service_and_is_reported_lost(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import signal

    make_project(local.projects, "long", SPAWNS_AND_WAITS)
    key = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"
    gateway = local(RPA_TOKEN_KEY=key)
    pid_file = tmp_path / "pgid"
    first = exec_stream(
        gateway.base_url,
        {"project_id": "long", "params": {"pid_file": str(pid_file)}},
        stop_after_lines=1,
    )
    pgid = int(wait_for_file(pid_file))
    gateway.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pgid in group_alive(pgid):
        time.sleep(0.05)
    assert pgid not in group_alive(pgid), "the run's leader died with the service"
    assert len(group_alive(pgid)) == 1, "the death signal reaches the leader only"
    restarted = GatewayProcess(gateway.env, gateway.workdir).start()
    try:
        assert group_alive(pgid) == [], "the next service killed what the run left behind"
        assert "killed 1 processes left by local runs" in restarted.log_text()
        resumed = exec_stream(
            restarted.base_url, {"project_id": "long"}, headers={"Last-Event-ID": first.ids[0]}
        )
    finally:
        restarted.stop()
    assert resumed.terminal["code"] == 55002
    assert "lost" in resumed.terminal["message"]


def test_a_grandchild_holding_stdout_neither_hangs_the_run_nor_outlives_it(
    local, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "leaky",
        """
        import json, os, subprocess, sys
        params = json.load(sys.stdin)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(params["pid_file"], "w").write(f"{os.getpgid(0)} {child.pid}")
        print(json.dumps({"event": "result", "data": {"done": True}}), flush=True)
        """,
        timeout=60,
    )
    gateway = local()
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    result = exec_stream(
        gateway.base_url, {"project_id": "leaky", "params": {"pid_file": str(pid_file)}}
    )
    assert result.terminal["code"] == 0 and result.terminal["data"] == {"done": True}
    assert time.monotonic() - started < 20, "not held open until the project's 60 s timeout"
    pgid, child = (int(n) for n in wait_for_file(pid_file).split())
    assert child not in group_alive(pgid), "the run's group is killed once its leader exits"


def test_projects_get_params_but_not_the_services_secrets(local, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(
        local.projects,
        "nosy",
        """
        import json, os, sys
        print("x" * 300_000, flush=True)   # prints before reading stdin: must not block
        params = json.load(sys.stdin)
        leaked = sorted(k for k in os.environ if k.startswith(("RPA_TOKEN", "XIAOWU_")))
        print(json.dumps({"event": "result", "data": {"size": len(params["blob"]),
              "leaked": leaked, "env_params": "RPA_PARAMS" in os.environ}}))
    """,
    )
    key = "mS4jW1cZr3bZk7pQvQyX0Gm8bYtq2w5hJb0c1d2e3f4"
    gateway = local(RPA_TOKEN_KEY=key)
    result = exec_stream(
        gateway.base_url, {"project_id": "nosy", "params": {"blob": "b" * 200_000}}, timeout=30
    )
    assert result.terminal["data"] == {"size": 200_000, "leaked": [], "env_params": False}


@pytest.mark.parametrize(
    "line",
    [
        '{"event": "result", "data": {"text": "\\ud800"}}',
        '{"event": "result", "data": {"ratio": NaN}}',
        '{"event": "result", "data": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}",
    ],
    ids=["lone-surrogate", "nan", "nested-3000"],
)
def test_output_no_json_reader_takes_back_is_no_result(local, line: str) -> None:  # type: ignore[no-untyped-def]
    make_project(local.projects, "odd", f"print({line!r})")
    result = exec_stream(local().base_url, {"project_id": "odd"}, timeout=20)
    assert result.terminal["code"] == 55002
    assert "without a result line" in result.terminal["message"]


QUICK = """
    import json, sys
    print(json.dumps({"event": "result", "data": json.load(sys.stdin)}), flush=True)
"""


def test_a_burst_from_one_caller_queues_and_every_run_finishes(local) -> None:  # type: ignore[no-untyped-def]
    """300 runs of one key at once (an agent platform's burst): none refused, none lost.

    Spawns run in threads while the loop closes finished runs' pipes; a descriptor
    closed twice there failed about one run in 250 (see test_spawn_pipes).
    """
    make_project(local.projects, "quick", QUICK)
    gateway = local()
    runs = 300

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/rpa/v1/executions",
                        json={"project_id": "quick", "params": {"n": n}},
                        headers=auth("one-platform-key"),
                    )
                    for n in range(runs)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [202] * runs
    rows = [wait_for_finished(gateway.database, r.json()["id"], timeout=120) for r in responses]
    failures = [(row["code"], row["message"]) for row in rows if row["code"] != 0]
    assert failures == []
    assert [json.loads(row["data"]) for row in rows] == [{"n": n} for n in range(runs)]


def test_a_missing_or_empty_projects_folder_is_named_at_start_up(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    gateway = start_gateway(upstream=False, RPA_BACKEND="local", RPA_PROJECTS_DIR=str(missing))
    assert f"the projects folder {missing} (RPA_PROJECTS_DIR) does not exist" in (
        gateway.log_text()
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    other = start_gateway(upstream=False, RPA_BACKEND="local", RPA_PROJECTS_DIR=str(empty))
    assert f"the projects folder {empty} (RPA_PROJECTS_DIR) holds no folder" in other.log_text()
    assert "WARNING" in other.log_text().split("holds no folder")[0].splitlines()[-1]


def test_a_folder_with_projects_starts_without_a_warning(local) -> None:  # type: ignore[no-untyped-def]
    make_project(local.projects, "one", 'print(\'{"event": "result", "data": {}}\')')
    gateway = local()
    assert "no projects" not in gateway.log_text()
