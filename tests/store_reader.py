"""Reads the gateway's SQLite file directly, as an operator inspecting it would."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def execution_row(database: Path, execution_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM executions WHERE id=?", (execution_id,)).fetchone()
    return None if row is None else dict(row)


def wait_for_finished(database: Path, execution_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = execution_row(database, execution_id)
        if row is not None and row["finished_at"] is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish in {timeout}s")


def event_kinds(database: Path, execution_id: str) -> list[str]:
    with sqlite3.connect(database) as db:
        return [
            k
            for (k,) in db.execute(
                "SELECT kind FROM events WHERE execution_id=? ORDER BY seq", (execution_id,)
            )
        ]
