"""A real nginx in front of gateway replicas, configured from deploy/nginx-rpa-gateway.conf."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.gateway_process import free_port

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx-rpa-gateway.conf"
_INSTALL_HINT = "nginx is needed for the replica tests; .ci/run installs it (apt-get install nginx)"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(_INSTALL_HINT)
    return found


def site_config(replica_ports: list[int], listen: str) -> str:
    """deploy/nginx-rpa-gateway.conf with the replicas and the listen address filled in."""
    servers = "\n    ".join(
        f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in replica_ports
    )
    return TEMPLATE.read_text().replace("@REPLICAS@", servers).replace("@LISTEN@", listen)


def main_config(workdir: Path, site: str) -> str:
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may write its temp paths
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log info;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n"
        f"    client_body_temp_path {temp['body']};\n    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        f"{site}\n}}\n"
    )


class NginxProxy:
    def __init__(self, workdir: Path, replica_ports: list[int], port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.replica_ports = replica_ports
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> NginxProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        site = site_config(self.replica_ports, f"127.0.0.1:{self.port}")
        conf.write_text(main_config(self.workdir, site))
        self.process = subprocess.Popen(
            [nginx_binary(), "-c", str(conf), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.workdir / 'stderr.log').read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10, **kwargs)  # type: ignore[arg-type]
