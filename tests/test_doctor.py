"""``rpa-gateway doctor`` as a user runs it (a process, its settings from the environment)
and ``GET /rpa/v1/diagnose`` on a running service: each fault named, with its fix; exit 0
only when every check passed; no key printed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.conftest import GatewayFactory
from tests.fakes.rpa_upstream import CREATE_PATH, QUERY_PATH, FakeUpstream, managed_contract
from tests.local_projects import make_project
from tests.native_client import auth


def doctor(tmp_path: Path, token: str, **env: str) -> tuple[int, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = {"RPA_DATA_DIR": str(tmp_path / "data"), **env}
    done = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "doctor", f"--token={token}"],
        env={k: v for k, v in os.environ.items() if not k.startswith(("RPA_", "XIAOWU_"))}
        | settings,
        cwd=tmp_path,  # no config.env here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert token not in done.stdout + done.stderr
    return done.returncode, done.stdout.splitlines()


def failed(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"FAIL {name}:")]
    return line


def key() -> str:
    return f"doctor-{uuid.uuid4().hex[:8]}"


def test_a_healthy_platform_passes(tmp_path: Path, fake: FakeUpstream) -> None:
    code, lines = doctor(tmp_path, key(), **fake.env())
    assert code == 0, lines
    names = [line.split(":", 1)[0] for line in lines]
    assert names == [
        "ok   settings",
        "ok   store writable",
        "ok   platform reachable",
        "ok   create route",
        "ok   query route",
        "ok   key accepted",
        "ok   clock",
        "ok   contract",
    ]


def test_each_fault_is_named_with_its_fix(tmp_path: Path, fake: FakeUpstream) -> None:
    code, lines = doctor(tmp_path / "setting", key(), RPA_MAX_BODY_BYTES="lots")
    assert code == 1 and "RPA_MAX_BODY_BYTES" in failed(lines, "settings"), lines

    wrong_path = {**fake.env(), "XIAOWU_RPA_TASK_CREATE_URL": fake.base_url + "/api/run"}
    code, lines = doctor(tmp_path / "path", key(), **wrong_path)
    assert code == 1 and "XIAOWU_RPA_TASK_CREATE_URL must end in" in failed(lines, "create route")

    rejected = key()
    fake.rejected.add(rejected)
    code, lines = doctor(tmp_path / "key", rejected, **fake.env())
    assert code == 1 and "rejected the key" in failed(lines, "key accepted"), lines

    offline = key()
    fake.offer_contract(offline, managed_contract(client={"state": "offline", "protocol": None}))
    code, lines = doctor(tmp_path / "offline", offline, **fake.env())
    assert code == 1 and "start the RPA client" in failed(lines, "RPA client"), lines

    nowhere = {
        "XIAOWU_RPA_TASK_CREATE_URL": "http://127.0.0.1:9" + CREATE_PATH,
        "XIAOWU_RPA_TASK_QUERY_URL": "http://127.0.0.1:9" + QUERY_PATH,
    }
    code, lines = doctor(tmp_path / "host", key(), **nowhere)
    assert code == 1 and "cannot connect" in failed(lines, "platform reachable"), lines


def test_a_broken_local_project_is_named(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    make_project(projects, "fine", "print('{}')")
    broken = make_project(projects, "broken", "print('{}')")
    (broken / "project.toml").write_text("name = \n")
    code, lines = doctor(tmp_path, key(), RPA_BACKEND="local", RPA_PROJECTS_DIR=str(projects))
    assert code == 1 and "broken" in failed(lines, "projects"), lines


def test_the_service_diagnoses_the_caller_s_key(
    start_gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    gateway = start_gateway()
    fine, rejected = key(), key()
    fake.rejected.add(rejected)
    ok = httpx.get(f"{gateway.base_url}/rpa/v1/diagnose", headers=auth(fine), timeout=30).json()
    assert ok["ok"] is True, ok
    assert [c["name"] for c in ok["checks"]][:3] == [
        "settings",
        "store writable",
        "platform reachable",
    ]
    bad = httpx.get(f"{gateway.base_url}/rpa/v1/diagnose", headers=auth(rejected), timeout=30)
    checks = {c["name"]: c for c in bad.json()["checks"]}
    assert bad.json()["ok"] is False and not checks["key accepted"]["ok"]
    assert rejected not in bad.text
    assert httpx.get(f"{gateway.base_url}/rpa/v1/diagnose", timeout=10).status_code == 401
