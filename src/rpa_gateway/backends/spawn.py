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
- Each pipe descriptor has exactly one owner that closes it.  uvloop's pipe
  transports close the descriptor themselves *and* close the file object they
  were given (MagicStack/uvloop#763): between the two closes another thread (a
  spawn in progress) may be handed the same number and lose it, which failed
  about one run in 250 of a burst with EBADF.  So the pipes are made here, not
  by ``Popen`` (no file objects of its own), and the loop gets file objects that
  close the descriptor only where the loop's transport will not.
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
from io import FileIO
from pathlib import Path
from typing import Any

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
        asyncio.to_thread(_start, command, cwd, {**env, OWNER_VARIABLE: owner})
    )
    try:
        started = await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(_kill_once_started)
        raise
    popen, (stdin_fd, stdout_fd, stderr_fd) = started
    closes_fd = not _transport_closes_fd(loop)
    ends = [
        FileIO(stdout_fd, "r", closefd=closes_fd),
        FileIO(stderr_fd, "r", closefd=closes_fd),
        FileIO(stdin_fd, "w", closefd=closes_fd),
    ]
    pipes: list[asyncio.BaseTransport] = []  # in the order of ``ends``
    try:
        stdout = await _reader(loop, ends[0], pipes)
        stderr = await _reader(loop, ends[1], pipes)
        writer_protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), loop=loop)
        transport, _ = await loop.connect_write_pipe(lambda: writer_protocol, ends[2])
        pipes.append(transport)
        stdin = asyncio.StreamWriter(transport, writer_protocol, None, loop)
        exited = _exit_of(loop, popen)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        for pipe in pipes:
            pipe.close()
        for end in ends[len(pipes) :]:  # not handed to a transport yet
            fd = end.fileno()
            end.close()
            if not end.closefd:
                os.close(fd)
        raise
    return RunProcess(popen.pid, stdin, stdout, stderr, exited, tuple(pipes))


_Started = tuple[subprocess.Popen[bytes], tuple[int, int, int]]


def _start(command: Sequence[str], cwd: Path, env: dict[str, str]) -> _Started:
    """The process and the service's ends of its stdin, stdout and stderr pipes."""
    _check_executable(command[0], cwd, env)
    extra: dict[str, Any] = {}
    if _SETPRIV is not None:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    else:
        extra["preexec_fn"] = _die_with_parent
    stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
    stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
    stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
    ours, theirs = (stdin_write, stdout_read, stderr_read), (stdin_read, stdout_write, stderr_write)
    try:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=stdin_read,
            stdout=stdout_write,
            stderr=stderr_write,
            start_new_session=True,
            **extra,
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return popen, ours


def _transport_closes_fd(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop's pipe transports close the descriptor; asyncio's close only the file object."""
    return type(loop).__module__.startswith("uvloop")


def _kill_once_started(starting: asyncio.Future[_Started]) -> None:
    """The spawn finished for a run cancelled meanwhile: nothing of it may stay."""
    if not starting.cancelled() and starting.exception() is None:
        popen, ours = starting.result()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        for fd in ours:
            os.close(fd)


async def _reader(
    loop: asyncio.AbstractEventLoop, pipe: FileIO, pipes: list[asyncio.BaseTransport]
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
