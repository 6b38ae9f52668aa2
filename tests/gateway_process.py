"""The gateway as a real server process on a real socket, as users run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Servers started and not stopped yet: conftest stops those a test left behind.
running: set[GatewayProcess] = set()


class GatewayProcess:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_file = workdir / "gateway.log"
        self.env = {
            **os.environ,
            "SERVICE_HOST": "127.0.0.1",
            "RPA_DATA_DIR": str(workdir / "data"),
            **env,
            "SERVICE_PORT": str(self.port),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.launcher: list[str] = []  # a command to run the server under (e.g. prlimit)
        self.command = [sys.executable, "-m", "rpa_gateway", "serve"]  # or ["make", "run"]
        self.new_session = False  # its own process group, as an init system starts it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return Path(self.env["RPA_DATA_DIR"]) / "rpa-gateway.db"

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        running.add(self)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.launcher, *self.command],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_text()}")
            try:
                if httpx.get(self.base_url + "/rpa/v1/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)  # never leave a half-started server behind
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server and wait for it; a SIGTERM must end it cleanly within ``timeout``.

        A server that hangs is killed, and the test fails: a shutdown that needs SIGKILL
        would be one in production too.
        """
        if self.process is None:
            return 0
        running.discard(self)
        if self.process.poll() is not None:
            return self.process.returncode  # it ended on its own, or a test signalled it
        self.process.send_signal(sig)
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(
                f"gateway did not exit within {timeout:g} s of signal {sig}:\n"
                + self.log_text()[-3000:]
            ) from None
        if sig == signal.SIGTERM and returncode not in (0, -signal.SIGTERM):
            raise AssertionError(
                f"gateway exited with {returncode} on SIGTERM:\n" + self.log_text()[-3000:]
            )
        return returncode

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def refused_start(gateway: GatewayProcess) -> str:
    """What a service that cannot start said: exit status 3, one line, no traceback."""
    try:
        gateway.start()
    except RuntimeError as exc:
        assert "gateway exited at start" in str(exc), exc
    else:
        raise AssertionError("the gateway started")
    assert gateway.process is not None and gateway.process.returncode == 3
    said = gateway.log_text()
    assert "Traceback" not in said and "  File " not in said, said
    (line,) = [line for line in said.splitlines() if "cannot start: " in line]
    return line
