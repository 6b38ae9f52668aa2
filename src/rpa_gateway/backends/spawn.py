"""Starting a local run's process: its own group, killed with the service, marked as ours.

- Spawned with ``subprocess.Popen`` in a worker thread and no ``preexec_fn``,
  so CPython uses ``vfork`` and releases the GIL: about 1 ms, none of it on the
  event loop, where uvloop's own spawn forks the whole service on the loop
  (13 ms a run with 200 MB resident, measured) and a ``preexec_fn`` forces a
  full fork too.  The pipes are then read and written through the loop, and
  the exit is seen through a pidfd, without a thread.
- The die-with-the-service guarantee comes from ``setpriv --pdeathsig KILL``
  (util-linux), which sets it and execs the command; where ``setpriv`` is
  missing, ``prctl`` in a ``preexec_fn`` does (and the spawn is a full fork).
- The death signal reaches the run's own process only.  Every process of a run
  carries ``RPA_GATEWAY_RUN_OWNER`` in its environment (children inherit it), so
  a service starting on the same data directory kills what a killed
  predecessor's runs left behind.
- ``exited`` resolves when the run's own process exits, not when every holder
  of its pipes has closed them: a grandchild that inherited stdout must not hold
  the run open until its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

OWNER_VARIABLE = "RPA_GATEWAY_RUN_OWNER"
_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv")
_STREAM_LIMIT = 2**16  # asyncio's default StreamReader limit


def run_owner(data_dir: Path) -> str:
    """Names the runs of services on this data directory (not those of other instances)."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class RunProcess:
    pid: int
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    exited: asyncio.Future[int]  # the return code (negative: killed by that signal)
    pipes: tuple[asyncio.BaseTransport, ...]

    def close_pipes(self) -> None:
        """Let go of the pipes, even if a process that left the group still holds them."""
        for pipe in self.pipes:
            pipe.close()


async def spawn(
    command: Sequence[str], *, cwd: Path, env: dict[str, str], owner: str
) -> RunProcess:
    """Start ``command`` in its own session with its three standard streams piped."""
    loop = asyncio.get_running_loop()
    # In a thread: vfork releases the GIL, so the loop goes on while the child starts.
    starting = asyncio.ensure_future(
        asyncio.to_thread(_popen, command, cwd, {**env, OWNER_VARIABLE: owner})
    )
    try:
        popen = await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(_kill_once_started)
        raise
    pipes: list[asyncio.BaseTransport] = []
    try:
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        stdout = await _reader(loop, popen.stdout, pipes)
        stderr = await _reader(loop, popen.stderr, pipes)
        writer_protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), loop=loop)
        transport, _ = await loop.connect_write_pipe(lambda: writer_protocol, popen.stdin)
        pipes.append(transport)
        stdin = asyncio.StreamWriter(transport, writer_protocol, None, loop)
        exited = _exit_of(loop, popen)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        for pipe in pipes:
            pipe.close()
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()
        raise
    return RunProcess(popen.pid, stdin, stdout, stderr, exited, tuple(pipes))


def _popen(command: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    extra: dict[str, Any] = {}
    _check_executable(command[0], cwd, env)
    if _SETPRIV is not None:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    else:
        extra["preexec_fn"] = _die_with_parent
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **extra,
    )


def _kill_once_started(starting: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """The spawn finished for a run cancelled meanwhile: nothing of it may stay."""
    if not starting.cancelled() and starting.exception() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(starting.result().pid, signal.SIGKILL)


async def _reader(
    loop: asyncio.AbstractEventLoop, pipe: IO[bytes], pipes: list[asyncio.BaseTransport]
) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
    )
    pipes.append(transport)
    return reader


def _exit_of(
    loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]
) -> asyncio.Future[int]:
    """A future of the process's return code, reaped when its pidfd turns readable."""
    exited: asyncio.Future[int] = loop.create_future()
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # no pidfd (Linux before 5.3): a thread waits instead
        return asyncio.ensure_future(loop.run_in_executor(None, popen.wait))

    def reap() -> None:
        returncode = popen.poll()
        if returncode is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(returncode)

    loop.add_reader(pidfd, reap)
    return exited


def _check_executable(program: str, cwd: Path, env: dict[str, str]) -> None:
    """Raise as a direct spawn would: behind setpriv a missing program is only an exit 127."""
    if "/" in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        found = path.is_file() and os.access(path, os.X_OK)
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath)) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the run is killed if the service dies, instead of living on unwatched."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def kill_leftovers(owner: str) -> int:
    """SIGKILL every process carrying this owner's mark (left by a killed predecessor)."""
    mark = f"{OWNER_VARIABLE}={owner}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if mark in environment.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    if killed:
        log.warning("killed %d processes left by local runs of a previous service", killed)
    return killed
