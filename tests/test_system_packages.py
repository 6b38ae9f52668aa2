"""deploy/system-packages.sh installs what it is asked for, only when missing: `make cluster`
asks for redis-server and nginx alone (no browser for a cluster).  apt-get is a stand-in
that records its arguments: nothing is installed by this test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "system-packages.sh"


def run(tmp_path: Path, *packages: str, present: tuple[str, ...]) -> list[str]:
    """The script with only ``present`` commands on PATH; what it asked apt-get for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("bash", "id", "dpkg", *present):
        found = shutil.which(tool) or f"/usr/sbin/{tool}"
        target = bin_dir / tool
        if not target.exists():
            target.symlink_to(found)
    record = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bin_dir / "apt-get").chmod(0o755)
    completed = subprocess.run(
        ["bash", str(SCRIPT), *packages],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 or os.geteuid() != 0, completed.stderr
    return record.read_text().splitlines() if record.exists() else []


def test_make_cluster_asks_for_redis_and_nginx_only(tmp_path: Path) -> None:
    asked = run(tmp_path, "redis-server", "nginx", present=())
    (install,) = [line.split()[3:] for line in asked if line.startswith("install")]
    # (nginx may be found at /usr/sbin/nginx, whatever PATH says.)
    assert "redis-server" in install and set(install) <= {"redis-server", "nginx"}, asked


def test_the_tests_ask_for_every_missing_package_and_nothing_present(tmp_path: Path) -> None:
    asked = run(tmp_path, present=("redis-server", "nginx"))
    (install,) = [line for line in asked if line.startswith("install")]
    assert install.endswith("chromium chromium-driver nodejs npm"), install
    assert (
        run(
            tmp_path / "all",
            present=("redis-server", "nginx", "chromium", "chromedriver", "node", "npm"),
        )
        == []
    )
