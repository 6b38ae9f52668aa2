"""Real ``redis-server`` processes on loopback ports, for tests and benchmarks.

A standalone server or a three-master cluster, each node in its own directory on a
free port.  Every helper waits by polling with a deadline, and whatever a helper
started is stopped again when it fails half-way.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

_INSTALL_HINT = (
    "redis-server and redis-cli are needed for the Redis store tests; .ci/run installs"
    " them (apt-get install redis-server)"
)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: {_INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, its data and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        appendonly: bool = False,
        cluster: bool = False,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.bus_port = free_port() if cluster else 0
        self.password = password
        self.appendonly = appendonly
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "redis.log"

    def client(self, **options: float) -> redis.Redis:
        """A synchronous client, for what a test does behind the store's back."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **options
        )

    def _arguments(self) -> list[str]:
        arguments = [
            _binary("redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        if self.password is not None:
            arguments += ["--requirepass", self.password, "--masterauth", self.password]
        if self.cluster:
            arguments += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_port),
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        return arguments

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._arguments(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the server answers PING (a server loading its append-only file does not)."""
        deadline = time.monotonic() + timeout
        client = self.client(socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start:\n{self.log_text()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server not ready after {timeout}s:\n{self.log_text()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stopped and started again on the same port and directory."""
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


class RedisClusterNodes:
    """Three masters, no replicas, every slot assigned."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        self.nodes = [
            RedisServer(workdir / f"node{i}", password=password, cluster=True) for i in range(3)
        ]
        self.password = password

    @property
    def seeds(self) -> list[str]:
        return [node.addr for node in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisClusterNodes:
        try:
            for node in self.nodes:
                node.start()
            self._create(timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, timeout: float) -> None:
        command = [_binary("redis-cli"), "--cluster", "create", *self.seeds]
        command += ["--cluster-replicas", "0", "--cluster-yes"]
        if self.password is not None:
            command += ["-a", self.password, "--no-auth-warning"]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            client = node.client(socket_connect_timeout=0.5)
            try:
                while not _cluster_ok(client):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster not ready after {timeout}s")
                    time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(client: redis.Redis) -> bool:
    try:
        info = client.cluster("INFO")
    except redis.RedisError:
        return False
    return bool(info.get("cluster_state") == "ok")


@contextmanager
def standalone_server(
    workdir: Path, *, password: str | None = None, appendonly: bool = False
) -> Iterator[RedisServer]:
    server = RedisServer(workdir, password=password, appendonly=appendonly)
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def cluster_servers(workdir: Path, *, password: str | None = None) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(workdir, password=password)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
