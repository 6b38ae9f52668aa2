"""`make cluster`: Redis, three rpa-gateway replicas and nginx in front, on this machine.

Redis (AOF on) keeps its data in .cluster/redis; the replicas listen on loopback ports
SERVICE_PORT+1..+3 (Redis on +4) with their own data directories; nginx, configured from
deploy/nginx-rpa-gateway.conf, listens on 127.0.0.1:SERVICE_PORT (19999 by default).
Settings come from the environment as for `make run` (the backend, XIAOWU_* URLs, keys);
RPA_TOKEN_KEY, which every replica must share, is made once and kept in .cluster/.
Ctrl-C stops everything.  Try: kill one replica (`kill -9` a pid it prints) while a
stream runs through port 19999 - the stream's execution goes on at another replica.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import load as bench_load  # noqa: E402
from tests.nginx_proxy import NginxProxy  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402

from rpa_gateway.security import new_key  # noqa: E402

STATE = ROOT / ".cluster"


def token_key() -> str:
    if os.environ.get("RPA_TOKEN_KEY"):
        return os.environ["RPA_TOKEN_KEY"]
    path = STATE / "token.key"
    if not path.exists():
        path.write_text(new_key())
        path.chmod(0o600)
    return path.read_text().strip()


def start_replica(index: int, port: int, redis: RedisServer, key: str) -> subprocess.Popen[bytes]:
    workdir = STATE / f"replica{index}"
    workdir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SERVICE_HOST": "127.0.0.1",
        "SERVICE_PORT": str(port),
        "RPA_DATA_DIR": str(workdir / "data"),
        "REDIS_ADDR": redis.addr,
        "RPA_TOKEN_KEY": key,
    }
    log = (workdir / "gateway.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "rpa_gateway", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log
    )


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    try:
        bench_load.wait_ready(f"http://127.0.0.1:{port}/rpa/v1/ready", process)
    except RuntimeError as exc:
        raise SystemExit(f"{exc}; see {STATE}/replica*/gateway.log") from None


def main() -> int:
    STATE.mkdir(exist_ok=True)
    port = int(os.environ.get("SERVICE_PORT", "19999"))
    (STATE / "redis").mkdir(exist_ok=True)
    redis = RedisServer(STATE / "redis", appendonly=True)
    redis.port = port + 4  # a fixed address across restarts
    redis.start()
    key = token_key()
    ports = [port + 1 + i for i in range(3)]
    replicas: list[subprocess.Popen[bytes]] = []
    nginx = NginxProxy(STATE / "nginx", ports, port=port)
    try:
        for index, replica_port in enumerate(ports):
            replicas.append(start_replica(index, replica_port, redis, key))
        for replica_port, process in zip(ports, replicas, strict=True):
            wait_ready(replica_port, process)
        nginx.start()
        print(f"Redis at {redis.addr} (AOF in {STATE / 'redis'})")
        for replica_port, process in zip(ports, replicas, strict=True):
            print(f"replica pid {process.pid} on 127.0.0.1:{replica_port}")
        print(f"nginx: http://127.0.0.1:{port}  (Ctrl-C stops everything)", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping: replicas drain, then exit", flush=True)
    finally:
        nginx.stop()
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        for process in replicas:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
