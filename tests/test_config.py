"""Start-up configuration: reference names, config.env, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rpa_gateway.security import new_key
from tests.gateway_process import GatewayProcess, free_port, refused_start


def serve_exit(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "serve"],
        env={**os.environ, "RPA_DATA_DIR": str(cwd / "data"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {
                "XIAOWU_RPA_TASK_CREATE_URL": "ftp://rpa/create",
                "XIAOWU_RPA_TASK_QUERY_URL": "http://rpa/q",
            },
            "XIAOWU_RPA_TASK_CREATE_URL: must be an http:// or https:// URL",
        ),
        ({"XIAOWU_RPA_PING_INTERVAL": "-1"}, "XIAOWU_RPA_PING_INTERVAL: Input should be greater"),
        (
            {"XIAOWU_RPA_TASK_QUERY_INTERVAL": "soon"},
            "XIAOWU_RPA_TASK_QUERY_INTERVAL: Input should",
        ),
        ({"XIAOWU_RPA_TIMEOUT": "0"}, "XIAOWU_RPA_TIMEOUT: Input should be greater than 0"),
        (
            {"XIAOWU_RPA_TASK_CANCEL_URL": "http://rpa/cancel"},
            "XIAOWU_RPA_TASK_CANCEL_URL: must contain {execution_id}",
        ),
        (
            {"XIAOWU_RPA_TASK_CREATE_URL": "http://rpa/create"},
            "XIAOWU_RPA_TASK_QUERY_URL: must be set when XIAOWU_RPA_TASK_CREATE_URL is set",
        ),
        ({"SERVICE_PORT": "70000"}, "SERVICE_PORT: Input should be less than or equal to 65535"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: must be one of"),
        (
            {"RPA_BACKEND": "astron"},
            "XIAOWU_RPA_TASK_CREATE_URL: must be set when RPA_BACKEND is astron",
        ),
        ({"RPA_BACKEND": "cloud"}, "RPA_BACKEND: Input should be 'local' or 'astron'"),
        (
            {"RPA_STORE_MAX_MB": "0.05"},
            "RPA_STORE_MAX_MB: Input should be greater than or equal to 1",
        ),
        ({"RPA_TOKEN_KEY": "not-a-valid-key-value"}, "RPA_TOKEN_KEY: must be 32 bytes"),
        (
            {"REDIS_ADDR": "127.0.0.1:6379"},
            "the Redis store (REDIS_ADDR / REDIS_CLUSTER_ADDR) needs",
        ),
        ({"REDIS_ADDR": "redis"}, "Redis address 'redis' is not host:port"),
        (
            {"REDIS_ADDR": "a:1", "REDIS_CLUSTER_ADDR": "b:1,c:1"},
            "set REDIS_ADDR (one server) or REDIS_CLUSTER_ADDR, not both",
        ),
    ],
)
def test_invalid_setting_stops_startup_with_one_line(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    completed = serve_exit(env, tmp_path)
    assert completed.returncode == 2
    errors = completed.stderr.strip().splitlines()
    assert len(errors) == 1, completed.stderr
    assert errors[0].startswith("rpa-gateway: configuration error: ")
    assert line in errors[0]
    assert "not-a-valid-key-value" not in completed.stderr, "a secret is never echoed"


def test_keygen_makes_a_key_the_service_accepts(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "keygen"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    gateway = GatewayProcess({"RPA_TOKEN_KEY": made}, tmp_path).start()
    try:
        assert httpx.get(gateway.base_url + "/rpa/v1/ready").status_code == 200
    finally:
        gateway.stop()


def test_config_env_file_is_read(tmp_path: Path) -> None:
    gateway = GatewayProcess({}, tmp_path)
    del gateway.env["SERVICE_PORT"]
    (tmp_path / "config.env").write_text(
        f"SERVICE_PORT={gateway.port}\nXIAOWU_RPA_PING_INTERVAL=7\n"
    )
    gateway.start()
    try:
        assert httpx.get(gateway.base_url + "/rpa/v1/ping").json() == "pong"
    finally:
        gateway.stop()


def test_kafka_enable_0_turns_the_trace_log_off_as_in_astron_agents_compose(
    tmp_path: Path,
) -> None:
    # astron-agent's compose always sets KAFKA_SERVERS and switches Kafka with KAFKA_ENABLE.
    env = {"KAFKA_SERVERS": "kafka:29092", "KAFKA_ENABLE": "0", "RPA_PROMETHEUS_ENABLE": "true"}
    gateway = GatewayProcess(env, tmp_path).start()
    try:
        assert "kafka off" in gateway.log_text()
    finally:
        gateway.stop()
    switched_on = GatewayProcess({**env, "KAFKA_ENABLE": "1"}, tmp_path / "on")
    switched_on.workdir.mkdir()
    switched_on.start()
    try:
        assert "kafka topic rpa-trace" in switched_on.log_text()
    finally:
        switched_on.stop()


def test_a_second_service_on_the_same_data_directory_refuses_to_start(tmp_path: Path) -> None:
    first = GatewayProcess({}, tmp_path).start()
    try:
        second = GatewayProcess({}, tmp_path)
        with pytest.raises(RuntimeError, match="another rpa-gateway process serves from"):
            second.start()
        assert second.process is not None and second.process.returncode == 3
        said = second.log_text().strip().splitlines()
        assert said[-1].startswith("rpa-gateway: cannot start: another rpa-gateway process")
        assert "Traceback" not in second.log_text()  # one line, not a stack
        assert httpx.get(first.base_url + "/rpa/v1/ready").status_code == 200
    finally:
        first.stop()


def test_start_up_failures_are_one_line_naming_the_problem_and_the_fix(tmp_path: Path) -> None:
    no_redis = GatewayProcess(
        {"REDIS_ADDR": f"127.0.0.1:{free_port()}", "RPA_TOKEN_KEY": new_key()}, tmp_path / "r"
    )
    no_redis.workdir.mkdir()
    line = refused_start(no_redis)
    assert "cannot connect to Redis" in line and "REDIS_ADDR" in line, line

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    line = refused_start(GatewayProcess({"RPA_DATA_DIR": str(not_a_folder)}, tmp_path))
    assert f"the data directory {not_a_folder} (RPA_DATA_DIR) cannot be used" in line, line

    # The lock is free but the database cannot open: refused from within the start-up.
    data = tmp_path / "data-with-a-folder-for-a-database"
    (data / "rpa-gateway.db").mkdir(parents=True)
    stuck = GatewayProcess({"RPA_DATA_DIR": str(data)}, tmp_path / "s")
    stuck.workdir.mkdir()
    line = refused_start(stuck)
    assert f"the store {data / 'rpa-gateway.db'} cannot be opened" in line, line
    assert "RPA_DATA_DIR" in line
