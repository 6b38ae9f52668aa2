"""A local run's pipes: every descriptor closed once, none taken from another thread.

uvloop's pipe transports close the descriptor and also the file object they were
given (MagicStack/uvloop#763).  When both own the number, whatever another thread
opened between the two closes is closed under it: in a burst of local runs that
was a concurrent spawn failing with EBADF about once in 250 runs.  The probe
below opens a pipe right after each file object's close, so it is handed the
freed number if the close freed one; the probe's descriptors must survive the
transport's own close.  Runs in-process on a real loop with real processes (no
HTTP involved: the race is between the loop and a thread of the same process).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from io import FileIO
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvloop

from rpa_gateway.backends import spawn as spawn_module
from rpa_gateway.backends.spawn import spawn

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


class ProbingFileIO(FileIO):
    """Takes the lowest free descriptors right after closing, as another thread could."""

    taken: ClassVar[list[int]] = []

    def close(self) -> None:
        super().close()
        ProbingFileIO.taken.extend(os.pipe())


def open_fds() -> set[int]:
    """This process's descriptors (without the one the listing itself used)."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def spawn_and_close() -> None:
    process = await spawn(
        ["sh", "-c", "cat; echo out; echo err >&2"],
        cwd=Path("/"),
        env=dict(os.environ),
        owner="test-spawn-pipes",
    )
    process.stdin.write(b"in\n")
    process.stdin.close()
    assert await process.stdout.read() == b"in\nout\n"
    assert await process.stderr.read() == b"err\n"
    assert await process.exited == 0
    process.close_pipes()
    await asyncio.sleep(0)  # close callbacks of the loop's handles


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_a_runs_pipes_closes_nothing_else(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ProbingFileIO.taken = []
    left_open: set[int] = set()

    async def scenario() -> None:
        async with asyncio.timeout(20):  # a stdin never closed would hang ``cat``
            await spawn_and_close()  # the first run opens what the loop keeps for later ones
            before = open_fds()
            with monkeypatch.context() as patch:
                patch.setattr(spawn_module, "FileIO", ProbingFileIO)
                await spawn_and_close()
            left_open.update(open_fds() - before - set(ProbingFileIO.taken))

    LOOPS[loop](scenario())
    assert len(ProbingFileIO.taken) == 6  # three ends, each closed (as a file object) once
    taken_alive = [fd for fd in ProbingFileIO.taken if _is_open(fd)]
    assert taken_alive == ProbingFileIO.taken, "the transport closed a descriptor it did not own"
    for fd in ProbingFileIO.taken:
        os.close(fd)
    assert not left_open, "a pipe of the run was left open"
