"""One run of a local project: a subprocess in its own process group.

Protocol: params arrive as JSON on stdin and in ``RPA_PARAMS``.  Each stdout line
that is a JSON object with ``"event": "progress"`` (``message``, optional
``percent``) reports progress; one with ``"event": "result"`` carries the
result ``data``; any other line is a log line.  Exit 0 after a result is
success; anything else is a failure with the tail of stderr.

Memory stays bounded whatever the project prints: lines are cut at
``max_line_bytes``, only the last ``max_log_lines`` log lines and
``stderr_tail_bytes`` of stderr are kept, and progress reaches the log at most
every ``progress_interval`` seconds (the latest report wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rpa_gateway.backends.base import Progress, TaskPhase, TaskState, TaskUpdate
from rpa_gateway.backends.projects import Project
from rpa_gateway.backends.spawn import RunProcess, spawn
from rpa_gateway.executions import JsonObject
from rpa_gateway.json_rules import decode_reply

# After the run's process exits and its group is killed: time to read what is left in its
# pipes, unless a process that left the group still holds them.
_OUTPUT_GRACE = 2.0
_GROUP_CHECK = 0.05  # seconds between looks for a stopped group's last process


@dataclass(frozen=True, slots=True)
class OutputLimits:
    max_line_bytes: int = 1024 * 1024
    max_log_lines: int = 200
    max_log_line_chars: int = 1000
    stderr_tail_bytes: int = 4096
    progress_interval: float = 0.1


class LocalRun:
    def __init__(
        self,
        task_id: str,
        project: Project,
        params: JsonObject,
        limits: OutputLimits,
        kill_grace: float,
        owner: str,
    ) -> None:
        self.task_id = task_id
        self.owner = owner
        self.project = project
        self.params = params
        self.limits = limits
        self.kill_grace = kill_grace
        self.logs: deque[str] = deque(maxlen=limits.max_log_lines)
        self.final: TaskState | None = None
        self._updates: asyncio.Queue[TaskUpdate] = asyncio.Queue()
        self._stderr_tail = bytearray()
        self._result: JsonObject | None = None
        self._process: RunProcess | None = None
        self._stopping: TaskPhase | None = None
        self._stopped = asyncio.Event()  # a stop's grace is over and the group killed
        self._last_progress_at = 0.0
        self._held_progress: Progress | None = None

    # --- the seam the backend uses ---------------------------------------------------
    async def updates(self) -> AsyncIterator[TaskUpdate]:
        while True:
            update = await self._updates.get()
            yield update
            if isinstance(update, TaskState) and update.phase is not TaskPhase.WORKING:
                return

    def end_before_start(self, phase: TaskPhase, reason: str) -> None:
        """Ends a run that never started (cancelled or timed out while queued)."""
        self._emit_final(TaskState(phase, phase.name, error=reason))

    async def stop(self, phase: TaskPhase) -> None:
        """Ends the run: SIGTERM to its group, SIGKILL after the grace period to whatever
        of the group is left.  The leader dying at once (SIGTERM's default) does not end
        the grace: the rest of the group gets it to clean up too."""
        if self.final is not None:
            return
        self._stopping = phase
        if self._process is None:
            return  # not spawned yet: _run sees _stopping and ends it at once
        _signal_group(self._process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.kill_grace):
                await asyncio.shield(self._process.exited)
                await _group_gone(self._process.pid)
        except TimeoutError:
            pass
        _signal_group(self._process.pid, signal.SIGKILL)
        await asyncio.shield(self._process.exited)
        self._stopped.set()

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:  # a failure to start (missing binary, bad cwd, ...)
            self._emit_final(
                TaskState(TaskPhase.FAILED, "FAILED", error=f"project could not run: {exc}")
            )

    # --- the process ---------------------------------------------------------------
    async def _run(self) -> None:
        if self._stopping is not None:
            self._emit_final(TaskState(self._stopping, self._stopping.name))
            return
        params_json = json.dumps(self.params, ensure_ascii=False)
        process = await spawn(
            self.project.command,
            cwd=self.project.folder,
            env=_run_environment(self.project.id, params_json),
            owner=self.owner,
        )
        self._process = process
        if self._stopping is not None:  # stopped while it was being spawned
            _signal_group(process.pid, signal.SIGKILL)
        self._updates.put_nowait(TaskState(TaskPhase.WORKING, "RUNNING"))
        # Fed while reading: a project that prints before reading stdin (or never reads
        # it) must not block on a full pipe.
        output = asyncio.gather(
            _feed(process.stdin, params_json.encode()),
            self._read_stdout(process.stdout),
            self._read_stderr(process.stderr),
        )
        try:
            async with asyncio.timeout(self.project.timeout):
                await asyncio.shield(process.exited)
        except TimeoutError:
            await self.stop(TaskPhase.TIMED_OUT)
        if self._stopping is not None:  # the leader died of a stop: the group's grace runs
            await self._stopped.wait()
        # Leave nothing of the group behind: this also closes the pipes a grandchild may
        # hold, so what is still in them is read to its end at once.
        _signal_group(process.pid, signal.SIGKILL)
        try:
            async with asyncio.timeout(_OUTPUT_GRACE):
                await output
        except TimeoutError:  # held open by a process that left the group
            output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await output
        process.close_pipes()
        returncode = await process.exited
        self._flush_progress()
        self._emit_final(self._final_state(returncode))

    def _final_state(self, returncode: int) -> TaskState:
        if self._stopping is TaskPhase.TIMED_OUT:
            return TaskState(
                TaskPhase.TIMED_OUT,
                "TIMED_OUT",
                error=f"project timeout of {self.project.timeout:g} s passed",
            )
        if self._stopping is not None:
            return TaskState(self._stopping, self._stopping.name)
        if returncode == 0 and self._result is not None:
            problem = self.project.output_problem(self._result)
            if problem is not None:
                return TaskState(
                    TaskPhase.FAILED,
                    "FAILED",
                    error=f"the result does not match the project's output_schema: {problem}",
                )
            return TaskState(TaskPhase.COMPLETED, "COMPLETED", data=self._result)
        if returncode == 0:
            return TaskState(
                TaskPhase.FAILED, "FAILED", error="project exited without a result line"
            )
        how = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with code {returncode}"
        )
        tail = " ".join(self._stderr_tail.decode("utf-8", "replace").split()[-60:])
        return TaskState(
            TaskPhase.FAILED, "FAILED", error=f"project {how}" + (f": {tail}" if tail else "")
        )

    def _emit_final(self, state: TaskState) -> None:
        if self.final is None:
            self.final = state
            self._updates.put_nowait(state)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        limit = self.limits.max_line_bytes
        pending = bytearray()
        overlong = False
        while chunk := await stream.read(65536):
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                if not overlong:
                    self._line(bytes(pending[:end]))
                overlong = False
                del pending[: end + 1]
            if len(pending) > limit:
                if not overlong:
                    self._log(pending[:200].decode("utf-8", "replace") + " …[line cut]")
                overlong = True
                pending.clear()
        if pending and not overlong:
            self._line(bytes(pending))

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        keep = self.limits.stderr_tail_bytes
        while chunk := await stream.read(65536):
            self._stderr_tail += chunk
            if len(self._stderr_tail) > keep:
                del self._stderr_tail[:-keep]

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        message = _json_object(text)
        if message is None or message.get("event") not in ("progress", "result"):
            if text:
                self._log(text)
            return
        if message["event"] == "result":
            data = message.get("data")
            self._result = (
                data if isinstance(data, dict) else ({} if data is None else {"value": data})
            )
            return
        percent = message.get("percent")
        self._progress(
            Progress(
                message=str(message.get("message", ""))[: self.limits.max_log_line_chars],
                percent=float(percent) if isinstance(percent, int | float) else None,
            )
        )

    def _progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress_at >= self.limits.progress_interval:
            self._last_progress_at = now
            self._held_progress = None
            self._updates.put_nowait(progress)
        else:
            if self._held_progress is None:
                asyncio.get_running_loop().call_later(
                    self.limits.progress_interval, self._flush_progress
                )
            self._held_progress = progress

    def _flush_progress(self) -> None:
        if self._held_progress is not None and self.final is None:
            self._last_progress_at = time.monotonic()
            self._updates.put_nowait(self._held_progress)
            self._held_progress = None

    def _log(self, text: str) -> None:
        self.logs.append(text[: self.limits.max_log_line_chars])


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = decode_reply(text)  # a line that could not be passed on is only a log line
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# Secrets and settings of the service itself are not the project's business.
_PRIVATE_PREFIXES = ("RPA_", "XIAOWU_", "OTLP_", "OTEL_", "KAFKA_")
# Linux refuses a single environment string over 128 KiB; params always arrive on stdin.
_MAX_PARAMS_IN_ENVIRONMENT = 100_000


def _run_environment(project_id: str, params_json: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    env["RPA_PROJECT_ID"] = project_id
    env["PYTHONUNBUFFERED"] = "1"
    if len(params_json.encode()) <= _MAX_PARAMS_IN_ENVIRONMENT:
        env["RPA_PARAMS"] = params_json
    return env


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()


async def _group_gone(pgid: int) -> None:
    """Until no live process of the group is left (a zombie has nothing left to do: one
    whose parent died waits for init to reap it, which may be never in a container)."""
    while _group_alive(pgid):  # noqa: ASYNC110 - nothing signals a group's last exit
        await asyncio.sleep(_GROUP_CHECK)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # After the command's closing parenthesis: state, ppid, pgrp.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
