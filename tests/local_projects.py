"""Builds throwaway local projects for the tests: a folder, a project.toml and a script."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any


def make_project(
    root: Path,
    project_id: str,
    script: str,
    *,
    timeout: float | None = None,
    schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    hints: dict[str, bool] | None = None,
    description: str | None = None,
) -> Path:
    folder = root / project_id
    folder.mkdir(parents=True)
    lines = [f'name = "{project_id}"', 'command = ["{python}", "main.py"]']
    if description is not None:
        lines.append(f"description = {json.dumps(description)}")
    if timeout is not None:
        lines.append(f"timeout = {timeout}")
    if schema is not None:
        lines.append(f"params_schema = {_toml_inline(schema)}")
    if output_schema is not None:
        lines.append(f"output_schema = {_toml_inline(output_schema)}")
    if hints is not None:
        lines.append(f"hints = {_toml_inline(hints)}")
    (folder / "project.toml").write_text("\n".join(lines) + "\n")
    (folder / "main.py").write_text(textwrap.dedent(script))
    return folder


def _toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_inline(v)}' for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    return json.dumps(value)


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written in {timeout}s")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


__all__ = ["group_alive", "make_project", "rss_kb", "wait_for_file"]
