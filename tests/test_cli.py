"""``rpa-gateway ls / show / watch / logs / cancel / projects`` against a running service,
as separate processes over real sockets, their ``--json`` output parsed back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.gateway_process import GatewayProcess
from tests.local_projects import make_project
from tests.native_client import auth, start_execution

EXAMPLES = Path(__file__).resolve().parent.parent / "projects"
TOKEN = "cli-token"


@pytest.fixture
def gateway(start_gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    projects = tmp_path / "projects"
    projects.mkdir()
    for example in ("countdown", "hello", "page-title"):
        shutil.copytree(EXAMPLES / example, projects / example)
    make_project(
        projects,
        "chatty",
        """
        import json, sys, time
        for n in range(int(json.load(sys.stdin).get("lines", 3))):
            print(f"line {n}", flush=True)
            time.sleep(0.3)
        print(json.dumps({"event": "result", "data": {}}))
        """,
    )
    return start_gateway(upstream=False, RPA_BACKEND="local", RPA_PROJECTS_DIR=str(projects))


def cli(
    gateway: GatewayProcess | str, *args: str, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    url = gateway if isinstance(gateway, str) else gateway.base_url
    return subprocess.run(
        [sys.executable, "-m", "rpa_gateway", *args, "--url", url, "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start(
    gateway: GatewayProcess, project: str, params: dict[str, object], token: str = TOKEN
) -> str:
    return start_execution(gateway.base_url, token, project, params)


def finished(gateway: GatewayProcess, execution_id: str) -> dict[str, object]:
    done = cli(gateway, "watch", execution_id, "--json")
    last: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return last


def test_ls_and_show_list_the_caller_s_executions_as_tables_and_json(
    gateway: GatewayProcess,
) -> None:
    greeted = start(gateway, "hello", {"name": "Ada"})
    counted = start(gateway, "countdown", {"seconds": 0})
    others = start(gateway, "hello", {"name": "Bob"}, token="someone-else")
    for execution_id in (greeted, counted):
        assert finished(gateway, execution_id)["event"] == "terminal"

    listed = cli(gateway, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert [i["id"] for i in items] == [counted, greeted]  # newest first, only its own
    assert {i["status"] for i in items} == {"SUCCEEDED"}
    only_hello = json.loads(cli(gateway, "ls", "--json", "--project", "hello").stdout)
    assert [i["id"] for i in only_hello] == [greeted]
    assert json.loads(cli(gateway, "ls", "--json", "--status", "failed").stdout) == []

    table = cli(gateway, "ls")  # piped: tab-separated lines a script can cut, no box
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == ["ID", "STATUS", "PROJECT", "SID", "STARTED", "DURATION", "CODE"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [
        (counted, "SUCCEEDED", "countdown", "0"),
        (greeted, "SUCCEEDED", "hello", "0"),
    ]
    assert others not in table.stdout
    assert not any(box in table.stdout for box in "│┃━─┏") and "\x1b[" not in table.stdout

    shown = json.loads(cli(gateway, "show", greeted, "--json").stdout)
    api = httpx.get(f"{gateway.base_url}/rpa/v1/executions/{greeted}", headers=auth(TOKEN))
    assert shown == api.json()
    detail = cli(gateway, "show", greeted).stdout
    fields = dict(line.split("\t", 1) for line in detail.splitlines() if "\t" in line)
    assert fields["status"] == "SUCCEEDED" and "Hello, Ada!" in fields["data"]

    hidden = cli(gateway, "show", others)
    assert hidden.returncode == 2 and "404" in hidden.stderr


def test_ls_watch_json_prints_each_change_as_it_happens(gateway: GatewayProcess) -> None:
    command = [sys.executable, "-m", "rpa_gateway", "ls", "--watch", "--json"]
    command += ["--project", "hello", "--url", gateway.base_url, "--token", TOKEN]
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(30, watcher.kill)  # a silent watcher fails the test, not hangs it
    deadline.start()
    try:
        assert watcher.stdout is not None
        start(gateway, "countdown", {"seconds": 0})  # another project: filtered out
        greeted = start(gateway, "hello", {"name": "Ada"})
        # From its start on (replayed if its feed opens later): the changes, to the end.
        while True:
            change = json.loads(watcher.stdout.readline())
            assert change["id"] == greeted and change["project_id"] == "hello"
            if change["status"] == "SUCCEEDED":
                break
    finally:
        deadline.cancel()
        watcher.terminate()
        watcher.wait(10)


def test_watch_prints_the_result_and_exits_by_outcome(gateway: GatewayProcess) -> None:
    counted = start(gateway, "countdown", {"seconds": 2})
    watched = cli(gateway, "watch", counted)
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout) == json.loads(watched.stdout.strip())
    assert json.loads(watched.stdout)["seconds"] == 2
    assert f"{counted}: RUNNING" in watched.stderr
    assert "[ 50.0%] 1 s left" in watched.stderr

    failing = start(gateway, "page-title", {"url": "http://127.0.0.1:9/"})
    failed = cli(gateway, "watch", failing)
    assert failed.returncode == 1
    assert "55002" in failed.stderr and "not a public address" in failed.stderr

    long = start(gateway, "countdown", {"seconds": 60})
    cancelled = cli(gateway, "cancel", long, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
    after_cancel = cli(gateway, "watch", long)
    assert after_cancel.returncode == 3 and "55004" in after_cancel.stderr

    lines = cli(gateway, "watch", counted, "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "terminal" and events[-1]["code"] == 0

    unknown = cli(gateway, "watch", "no-such-execution")
    assert unknown.returncode == 2 and "404" in unknown.stderr
    unreachable = cli("http://127.0.0.1:9", "watch", counted, "--reconnect-for", "0")
    assert unreachable.returncode == 2 and "cannot be reached" in unreachable.stderr


def test_logs_prints_and_follows_a_local_run_s_lines(gateway: GatewayProcess) -> None:
    chatty = start(gateway, "chatty", {"lines": 5})
    followed = cli(gateway, "logs", chatty, "-f")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [f"line {n}" for n in range(5)]
    after = cli(gateway, "logs", chatty, "--json")
    assert [json.loads(line) for line in after.stdout.splitlines()] == [
        f"line {n}" for n in range(5)
    ]


def test_run_json_prints_the_terminal_frame(gateway: GatewayProcess) -> None:
    ran = cli(gateway, "run", "hello", "-p", "name=Ada", "--sid", "s-7", "--json")
    assert ran.returncode == 0, ran.stderr
    frame = json.loads(ran.stdout)
    assert (frame["code"], frame["sid"]) == (0, "s-7")
    assert frame["data"]["greeting"] == "Hello, Ada!"
    failed = cli(gateway, "run", "page-title", "-p", "url=http://127.0.0.1:9/", "--json")
    assert failed.returncode == 1 and json.loads(failed.stdout)["code"] == 55002


def test_projects_lists_what_the_service_can_run(gateway: GatewayProcess) -> None:
    listed = json.loads(cli(gateway, "projects", "--json").stdout)
    assert sorted(p["id"] for p in listed) == ["chatty", "countdown", "hello", "page-title"]
    table = cli(gateway, "projects").stdout
    rows = {line.split("\t")[0]: line.split("\t") for line in table.splitlines()[1:]}
    assert rows["countdown"][3].startswith("Reports progress")
    assert table.splitlines()[0] == "PROJECT\tNAME\tTIMEOUT\tDESCRIPTION"


class CuttingProxy:
    """A TCP proxy to the gateway that can cut every connection it carries (as a
    network failure would), and records the request heads it forwarded."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        first = True
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if request and first:
                self.heads.append(data)
                first = False
            try:
                sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


@pytest.fixture
def proxy(gateway: GatewayProcess) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(gateway.port)
    yield cutting
    cutting.close()


def test_watch_re_attaches_across_a_dropped_connection(
    gateway: GatewayProcess, proxy: CuttingProxy
) -> None:
    counted = start(gateway, "countdown", {"seconds": 4})
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rpa_gateway",
            "watch",
            counted,
            "--json",
            "--url",
            f"http://127.0.0.1:{proxy.port}",
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    seen = [json.loads(watcher.stdout.readline())]
    while seen[-1]["event"] != "progress":
        seen.append(json.loads(watcher.stdout.readline()))
    proxy.cut()  # mid-run: the next events must come over a new connection
    rest, errors = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, errors
    events = seen + [json.loads(line) for line in rest.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    assert events[-1]["event"] == "terminal" and events[-1]["code"] == 0
    resumed = [h for h in proxy.heads[1:] if b"last-event-id" in h.lower()]
    assert resumed, proxy.heads
    assert f"{counted}:{seen[-1]['seq']}".encode() in resumed[0]


def test_the_cli_finds_the_service_its_config_env_names(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """A newcomer's folder: config.env sets the port; the Quickstart's curl token is the
    command line's default, so each sees the other's executions."""
    folder = tmp_path / "newcomer"
    folder.mkdir()
    (folder / "config.env").write_text(f"SERVICE_PORT={gateway.port}\n")
    execution_id = start_execution(gateway.base_url, "local-cli", "hello", {"name": "Nu"})
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("SERVICE_PORT", "RPA_GATEWAY_URL", "RPA_GATEWAY_TOKEN")
    }
    listed = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=folder,
        env=environment,
    )
    assert listed.returncode == 0, listed.stderr
    assert execution_id in listed.stdout
    # The environment still comes first, as for serve.
    elsewhere = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=folder,
        env={**environment, "SERVICE_PORT": "1"},
    )
    assert elsewhere.returncode == 2


# What a robot or a caller can put in front of a terminal: a screen clear, a new window
# title, a planted hyperlink, an 8-bit CSI, a right-to-left override, and rich markup
# behind the backslash that defeats rich's own escaping.
HOSTILE = (
    "\x1b[2J",
    "\x1b]0;owned\x07",
    "\x1b]8;;http://evil.example/\x1b\\",
    "\x9b31m",
    "\u202e",
)
MARKUP = "\\[bold red]not markup"


def hostile_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    projects = tmp_path / "projects"
    text = "".join(HOSTILE) + MARKUP
    make_project(
        projects,
        "hostile",
        f"""
        import json, sys
        text = {text!r}
        print("log " + text, flush=True)
        print(json.dumps({{"event": "result", "data": {{"text": text}}}}))
        """,
        description=text,
    )
    return start_gateway(upstream=False, RPA_BACKEND="local", RPA_PROJECTS_DIR=str(projects))


def raw_escapes(output: str) -> list[str]:
    """The hostile sequences that reached the output unescaped."""
    return [s for s in (*HOSTILE, "\x1b]", "\x9b", "\x07") if s in output]


def on_a_terminal(gateway: GatewayProcess, *args: str) -> str:
    """The command's stdout and stderr as a terminal receives them (a pseudo-terminal)."""
    import pty

    main_fd, terminal_fd = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rpa_gateway", *args, "--url", gateway.base_url, "--token", TOKEN],
        stdin=subprocess.DEVNULL,
        stdout=terminal_fd,
        stderr=terminal_fd,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "300"},
    )
    os.close(terminal_fd)
    received = bytearray()
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: the command exited and closed its side
            break
        if not chunk:
            break
        received += chunk
    os.close(main_fd)
    assert process.wait(timeout=60) in (0, 1), received
    return received.decode("utf-8", "replace")


def test_untrusted_text_shows_its_control_characters_and_markup_as_text(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = hostile_gateway(start_gateway, tmp_path)
    sid = "sid\x1b[2J\u202e"
    created = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions",
        json={"project_id": "hostile", "params": {}, "sid": sid},
        headers=auth(TOKEN),
        timeout=10,
    )
    assert created.status_code == 202, created.text
    execution_id = created.json()["id"]
    text = "".join(HOSTILE) + MARKUP
    assert finished(gateway, execution_id)["data"] == {"text": text}

    piped = {
        args[0]: cli(gateway, *args)
        for args in (
            ("ls",),
            ("show", execution_id),
            ("logs", execution_id),
            ("projects",),
            ("watch", execution_id),
            ("run", "hostile"),
        )
    }
    for command, done in piped.items():
        assert done.returncode == 0, (command, done.stderr)
        assert raw_escapes(done.stdout + done.stderr) == [], (command, done.stdout)
    # Shown, not swallowed: the escape is there to read, the markup as typed.
    assert "sid\\x1b[2J\\u202e" in piped["ls"].stdout
    assert "log \\x1b[2J\\x1b]0;owned\\x07" in piped["logs"].stdout
    assert MARKUP in piped["logs"].stdout and MARKUP in piped["projects"].stdout

    for args in (("show", execution_id), ("logs", execution_id), ("ls",), ("projects",)):
        shown = on_a_terminal(gateway, *args)
        assert raw_escapes(shown) == [], (args, shown)
        assert "\\x1b[2J" in shown, (args, shown)
    assert MARKUP in on_a_terminal(gateway, "logs", execution_id)

    # --json stays exact JSON: every string reads back as it was, escapes and all.
    shown = cli(gateway, "show", execution_id, "--json").stdout
    assert raw_escapes(shown) == []
    view = json.loads(shown)
    assert (view["sid"], view["result"]["data"]["text"]) == (sid, text)
    ran = cli(gateway, "run", "hostile", "--json").stdout
    assert raw_escapes(ran) == [] and json.loads(ran)["data"]["text"] == text
    logged = cli(gateway, "logs", execution_id, "--json").stdout
    assert json.loads(logged) == "log " + text
