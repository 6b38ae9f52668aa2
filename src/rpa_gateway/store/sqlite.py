"""The SQLite store: one WAL database file in the data directory.

Statements run on the event loop's thread.  Each is a few tens of microseconds
with ``synchronous=NORMAL`` in WAL mode (no fsync per commit), cheaper than a hop
to a worker thread; a commit survives the process being killed, and only an OS
crash can lose the last commits.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from rpa_gateway.executions import (
    Event,
    EventKind,
    Execution,
    ExecutionRequest,
    JsonObject,
    Outcome,
    Status,
    stored_terminal_data,
    terminal_data,
    with_result,
)
from rpa_gateway.security import private_directory
from rpa_gateway.store import sqlite_webhooks as webhook_tables
from rpa_gateway.store.base import (
    DuplicateIdempotencyKey,
    ListQuery,
    McpSession,
    NoticeListener,
    Renewal,
    StoreError,
    Subscription,
)
from rpa_gateway.store.hub import ChangeSubscription, Hub, Listener, MessageSubscription
from rpa_gateway.webhooks import model as webhook_events
from rpa_gateway.webhooks.store import WebhookStore

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    sid              TEXT NOT NULL,
    request          TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    deadline_at      REAL NOT NULL,
    finished_at      REAL,
    idempotency_key  TEXT,
    request_hash     TEXT,
    upstream_id      TEXT,
    create_started   INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    code             INTEGER,
    message          TEXT,
    data             TEXT,
    polls            INTEGER NOT NULL DEFAULT 0,
    retries          INTEGER NOT NULL DEFAULT 0,
    last_seq         INTEGER NOT NULL,
    logs             TEXT,
    sealed_token     BLOB
);
CREATE INDEX IF NOT EXISTS executions_unfinished
    ON executions (created_at) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS executions_finished ON executions (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS executions_by_owner ON executions (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS executions_by_created ON executions (created_at DESC, id DESC);
CREATE UNIQUE INDEX IF NOT EXISTS executions_idempotency
    ON executions (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS write_probe (b BLOB);
CREATE TABLE IF NOT EXISTS events (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    data         TEXT NOT NULL,
    at           REAL NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_one_terminal
    ON events (execution_id) WHERE kind = 'terminal';
CREATE TABLE IF NOT EXISTS run_durations (
    id      INTEGER PRIMARY KEY,
    model   TEXT NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS run_durations_by_model ON run_durations (model, id);
CREATE TABLE IF NOT EXISTS mcp_sessions (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    expires_at       REAL NOT NULL,
    transport        TEXT NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, owner, project_id, sid, request, status, created_at, updated_at, deadline_at,"
    " finished_at, idempotency_key, request_hash, upstream_id, create_started,"
    " cancel_requested, code, message, data, polls, retries, last_seq, logs"
)
_WAL_LIMIT_BYTES = 64 * 1024 * 1024


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _exclusive_lock(path: Path) -> int:
    """One service per data directory: a second would supervise the same executions (and,
    starting, kill the runs it takes for a dead predecessor's).  Released when the process
    ends, however it ends."""
    try:
        private_directory(path.parent)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            f"the data directory {path.parent} (RPA_DATA_DIR) cannot be used: {exc.strerror};"
            " it must be a folder this user can write"
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise StoreError(
            f"another rpa-gateway process serves from {path.parent}; one process per data"
            " directory (RPA_DATA_DIR)"
        ) from None
    return descriptor


def ensure_free(path: Path) -> None:
    """Raise :class:`StoreError` (one line, naming the folder) when another process serves
    from the data directory of the database at ``path``: checked before start-up."""
    os.close(_exclusive_lock(path.with_name(path.name + ".lock")))


def _private_file(path: Path) -> None:
    """The database readable by this user only (SQLite gives its WAL the same mode); a
    directory made for it is 0700."""
    private_directory(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists():
                file.chmod(0o600)
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror}") from exc


_PROBE_INTERVAL = 1.0
_PROBE = 256 * 1024  # bytes: room for a large request, as much as a probe can cheaply ask


class SqliteStore:
    def __init__(self, path: Path, *, max_bytes: int | None = None) -> None:
        self.path = path
        self._hub = Hub()
        self._notice_listeners: list[NoticeListener] = []
        # Why a write failed (a full disk, RPA_STORE_MAX_MB reached); None once a probe works.
        self._write_failure: str | None = None
        self._probed_at = 0.0
        self._lock = _exclusive_lock(path.with_name(path.name + ".lock"))
        try:
            _private_file(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Before any table exists, so freed pages can be returned to the OS after purges.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            if max_bytes is not None:
                self._bound(max_bytes)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"{path}: schema version {version} is not {SCHEMA_VERSION}")
            self._db.executescript(SCHEMA)
            self._db.executescript(webhook_tables.SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        self.webhooks: WebhookStore = webhook_tables.SqliteWebhooks(self._db, self._write_failed)

    def _bound(self, max_bytes: int) -> None:
        """The database and its WAL together within ``max_bytes``: a quarter is kept for the
        WAL, which is checkpointed once it holds half of that (a write committed past that
        point still lands whole, so it has the other half) and cut back to the quarter; the
        rest is the database's (its page count capped: a write beyond fails as on a full
        disk).  One write larger than an eighth of the bound can overstep it by its size."""
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = max_bytes // page_size
        wal_pages = max(16, pages // 4)
        self._db.execute(f"PRAGMA wal_autocheckpoint={wal_pages // 2}")
        self._db.execute(f"PRAGMA journal_size_limit={wal_pages * page_size}")
        self._db.execute(f"PRAGMA max_page_count={max(1, pages - wal_pages)}")

    # --- writes ---------------------------------------------------------------
    async def create(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str | None = None,
        lease_seconds: float = 0.0,
    ) -> Event:
        request = execution.request
        request_json = _dumps(request.stored())
        data = {"status": execution.status.value}
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    f"INSERT INTO executions ({_COLUMNS}, sealed_token) VALUES"
                    " (?,?,?,?,?,?,?,?,?,NULL,?,?,NULL,?,0,NULL,NULL,NULL,0,0,1,NULL,?)",
                    (
                        execution.id,
                        execution.owner,
                        request.project_id,
                        request.sid,
                        request_json,
                        execution.status.value,
                        execution.created_at,
                        execution.updated_at,
                        execution.deadline_at,
                        execution.idempotency_key,
                        execution.request_hash,
                        execution.create_started,
                        sealed_token,
                    ),
                )
                self._db.execute(
                    "INSERT INTO events VALUES (?,1,?,?,?)",
                    (execution.id, EventKind.STATE.value, _dumps(data), execution.created_at),
                )
        except sqlite3.IntegrityError as exc:
            if execution.idempotency_key is not None and "idempotency" in str(exc):
                raise DuplicateIdempotencyKey(execution.idempotency_key) from None
            raise self._write_failed("record execution", exc) from exc
        except sqlite3.Error as exc:
            raise self._write_failed("record execution", exc) from exc
        execution.last_seq = 1
        event = Event(execution.id, 1, EventKind.STATE, data, execution.created_at)
        self._hub.publish(event, execution)
        return event

    async def save(self, execution: Execution) -> None:
        try:
            self._db.execute(
                "UPDATE executions SET upstream_id=?, create_started=?, cancel_requested=?,"
                " polls=?, retries=? WHERE id=?",
                (
                    execution.upstream_id,
                    execution.create_started,
                    execution.cancel_requested,
                    execution.polls,
                    execution.retries,
                    execution.id,
                ),
            )
        except sqlite3.Error as exc:
            raise self._write_failed("save execution", exc) from exc

    async def append(
        self,
        execution: Execution,
        kind: EventKind,
        data: JsonObject,
        status: Status | None = None,
    ) -> Event:
        if kind is EventKind.TERMINAL:
            raise ValueError("terminal events are appended by finish()")
        now = time.time()
        if status is not None:
            execution.status = status
        execution.updated_at = now
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "UPDATE executions SET status=?, updated_at=?, upstream_id=?, polls=?,"
                    " retries=?, last_seq=last_seq+1"
                    " WHERE id=? AND finished_at IS NULL RETURNING last_seq",
                    (
                        execution.status.value,
                        now,
                        execution.upstream_id,
                        execution.polls,
                        execution.retries,
                        execution.id,
                    ),
                ).fetchone()
                if row is None:
                    raise StoreError(f"execution {execution.id} is missing or finished")
                seq = int(row[0])
                self._db.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?)",
                    (execution.id, seq, kind.value, _dumps(data), now),
                )
                if kind is EventKind.STATE and "upstream_id" in data:  # the run was created
                    webhook_tables.enqueue(
                        self._db,
                        execution.owner,
                        execution.request.project_id,
                        execution.id,
                        webhook_events.STARTED,
                        now,
                    )
        except sqlite3.Error as exc:
            raise self._write_failed("append event", exc) from exc
        execution.last_seq = seq
        event = Event(execution.id, seq, kind, data, now)
        self._hub.publish(event, execution)
        return event

    async def finish(
        self, execution: Execution, outcome: Outcome, *, announce: bool = True
    ) -> Event | None:
        now = time.time()
        data = terminal_data(outcome)
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "UPDATE executions SET status=?, updated_at=?, finished_at=?, upstream_id=?,"
                    " code=?, message=?, data=?, polls=?, retries=?, last_seq=last_seq+1,"
                    " logs=?, sealed_token=NULL"
                    " WHERE id=? AND finished_at IS NULL RETURNING last_seq",
                    (
                        outcome.status.value,
                        now,
                        now,
                        execution.upstream_id,
                        outcome.code,
                        outcome.message,
                        _dumps(outcome.data),
                        execution.polls,
                        execution.retries,
                        _dumps(execution.logs) if execution.logs else None,
                        execution.id,
                    ),
                ).fetchone()
                if row is None:
                    return None
                seq = int(row[0])
                self._db.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?)",
                    (
                        execution.id,
                        seq,
                        EventKind.TERMINAL.value,
                        _dumps(stored_terminal_data(data)),  # the result is in the record
                        now,
                    ),
                )
                # Its webhooks' deliveries, in the same transaction as the event.
                webhook_tables.enqueue(
                    self._db,
                    execution.owner,
                    execution.request.project_id,
                    execution.id,
                    webhook_events.terminal_event(outcome.status),
                    now,
                )
        except sqlite3.Error as exc:
            raise self._write_failed("finish execution", exc) from exc
        execution.status = outcome.status
        execution.outcome = outcome
        execution.finished_at = now
        execution.updated_at = now
        execution.last_seq = seq
        event = Event(execution.id, seq, EventKind.TERMINAL, data, now)
        if announce:
            self._hub.publish(event, execution)
        return event

    async def purge_finished(self, finished_before: float, batch: int) -> int:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                ids = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT id FROM executions WHERE finished_at IS NOT NULL"
                        " AND finished_at < ? ORDER BY finished_at LIMIT ?",
                        (finished_before, batch),
                    )
                ]
                if not ids:
                    return 0
                marks = ",".join("?" * len(ids))
                self._db.execute(f"DELETE FROM events WHERE execution_id IN ({marks})", ids)
                self._db.execute(f"DELETE FROM executions WHERE id IN ({marks})", ids)
            # executescript steps the pragma to the end; execute() would free one page only.
            self._db.executescript("PRAGMA incremental_vacuum;")
        except sqlite3.Error as exc:
            raise self._write_failed("purge executions", exc) from exc
        return len(ids)

    # --- reads ----------------------------------------------------------------
    async def get(self, execution_id: str) -> Execution | None:
        return self._one(f"SELECT {_COLUMNS} FROM executions WHERE id=?", (execution_id,))

    async def find_idempotent(self, owner: str, key: str) -> Execution | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM executions WHERE owner=? AND idempotency_key=?", (owner, key)
        )

    async def sealed_token(self, execution_id: str) -> bytes | None:
        try:
            row = self._db.execute(
                "SELECT sealed_token FROM executions WHERE id=?", (execution_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read execution: {exc}") from exc
        return None if row is None or row[0] is None else bytes(row[0])

    async def stored_bytes(self, owner: str) -> int:
        try:
            row = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(CAST(request AS BLOB)) + LENGTH(project_id)"
                " + LENGTH(sid) + COALESCE(LENGTH(CAST(data AS BLOB)), 0)"
                " + COALESCE(LENGTH(CAST(logs AS BLOB)), 0)), 0) FROM executions WHERE owner=?",
                (owner,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read executions: {exc}") from exc
        return int(row[0])

    async def events_after(self, execution_id: str, seq: int) -> list[Event]:
        try:
            rows = self._db.execute(
                "SELECT seq, kind, data, at FROM events WHERE execution_id=? AND seq>?"
                " ORDER BY seq",
                (execution_id, seq),
            ).fetchall()
            events = [
                Event(execution_id, int(s), EventKind(kind), json.loads(data), float(at))
                for s, kind, data, at in rows
            ]
            if events and events[-1].kind is EventKind.TERMINAL and "data" not in events[-1].data:
                result = self._db.execute(
                    "SELECT data FROM executions WHERE id=?", (execution_id,)
                ).fetchone()
                stored = json.loads(result[0]) if result and result[0] is not None else None
                events[-1] = with_result(events[-1], stored)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read events: {exc}") from exc
        return events

    async def unfinished(self, created_before: float | None = None) -> list[Execution]:
        return self._many(
            f"SELECT {_COLUMNS} FROM executions WHERE finished_at IS NULL AND created_at <= ?"
            " ORDER BY created_at",
            (math.inf if created_before is None else created_before,),
        )

    async def list_executions(self, query: ListQuery) -> list[Execution]:
        clauses = ["1"]
        args: list[Any] = []
        if query.owner is not None:
            clauses.append("owner=?")
            args.append(query.owner)
        if query.status is not None:
            clauses.append("status=?")
            args.append(query.status.value)
        if query.project_id is not None:
            clauses.append("project_id=?")
            args.append(query.project_id)
        if query.before is not None:
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [query.before[0], query.before[0], query.before[1]]
        args.append(query.limit)
        return self._many(
            f"SELECT {_COLUMNS} FROM executions WHERE {' AND '.join(clauses)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            tuple(args),
        )

    def _one(self, sql: str, args: tuple[Any, ...]) -> Execution | None:
        found = self._many(sql, args)
        return found[0] if found else None

    def _many(self, sql: str, args: tuple[Any, ...]) -> list[Execution]:
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read executions: {exc}") from exc
        return [_execution_from_row(row) for row in rows]

    # --- notification -----------------------------------------------------------
    def subscribe(
        self, execution_id: str, *, written_here: bool = False
    ) -> AbstractAsyncContextManager[Subscription]:
        return self._hub.subscribe(execution_id)

    def subscribe_changes(
        self, owner: str | None
    ) -> AbstractAsyncContextManager[ChangeSubscription]:
        return self._hub.subscribe_changes(owner)

    def written_elsewhere(self, execution_id: str) -> None:
        return None  # one process writes everything

    async def publish_only(self, event: Event, execution: Execution) -> None:
        self._hub.publish(event, execution)

    def drain(self) -> None:
        self._hub.drain()

    def add_listener(self, listener: Listener) -> None:
        self._hub.add_listener(listener)

    # --- run durations (duration_models) -------------------------------------------
    async def add_durations(self, added: Mapping[str, Sequence[float]], keep: int) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for model, durations in added.items():
                    self._db.executemany(
                        "INSERT INTO run_durations (model, seconds) VALUES (?,?)",
                        [(model, seconds) for seconds in durations],
                    )
                    self._db.execute(
                        "DELETE FROM run_durations WHERE model=? AND id <= (SELECT id FROM"
                        " run_durations WHERE model=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (model, model, keep),
                    )
        except sqlite3.Error as exc:
            raise self._write_failed("store run durations", exc) from exc

    async def durations(self, keys: Sequence[str], keep: int) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        try:
            for model in keys:
                rows = self._db.execute(
                    "SELECT seconds FROM run_durations WHERE model=? ORDER BY id DESC LIMIT ?",
                    (model, keep),
                ).fetchall()
                if rows:
                    found[model] = [row[0] for row in reversed(rows)]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read run durations: {exc}") from exc
        return found

    # --- MCP sessions, and messages (one process: delivered in memory) -----------------
    async def put_mcp_session(self, session: McpSession) -> None:
        try:
            self._db.execute(
                "INSERT INTO mcp_sessions (id, owner, protocol_version, expires_at, transport)"
                " VALUES (?,?,?,?,?)",
                (
                    session.id,
                    session.owner,
                    session.protocol_version,
                    session.expires_at,
                    session.transport,
                ),
            )
        except sqlite3.Error as exc:
            raise self._write_failed("store an MCP session", exc) from exc

    async def update_mcp_session(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        expires_at: float | None = None,
    ) -> bool:
        try:
            updated = self._db.execute(
                "UPDATE mcp_sessions SET protocol_version=coalesce(?, protocol_version),"
                " expires_at=coalesce(?, expires_at) WHERE id=? AND expires_at > ?",
                (protocol_version, expires_at, session_id, time.time()),
            ).rowcount
        except sqlite3.Error as exc:
            raise self._write_failed("update an MCP session", exc) from exc
        return updated > 0

    async def mcp_session(self, session_id: str) -> McpSession | None:
        try:
            row = self._db.execute(
                "SELECT owner, protocol_version, expires_at, transport FROM mcp_sessions"
                " WHERE id=?",
                (session_id,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read an MCP session: {exc}") from exc
        if row is None or row[2] <= time.time():
            return None
        return McpSession(session_id, row[0], row[1], row[2], row[3])

    async def end_mcp_session(self, session_id: str) -> bool:
        try:
            ended = self._db.execute(
                "DELETE FROM mcp_sessions WHERE id=? AND expires_at > ?",
                (session_id, time.time()),
            ).rowcount
        except sqlite3.Error as exc:
            raise self._write_failed("end an MCP session", exc) from exc
        return ended > 0

    async def purge_mcp_sessions(self, now: float) -> int:
        try:
            purged: int = self._db.execute(
                "DELETE FROM mcp_sessions WHERE expires_at <= ?", (now,)
            ).rowcount
        except sqlite3.Error as exc:
            raise self._write_failed("purge MCP sessions", exc) from exc
        return purged

    async def send_message(self, channel: str, message: str) -> None:
        self._hub.deliver_message(channel, message)

    def subscribe_messages(self, channel: str) -> AbstractAsyncContextManager[MessageSubscription]:
        return self._hub.subscribe_messages(channel)

    # --- supervision: one process per data directory, so every claim is granted ----
    async def claim(self, execution_id: str, holder: str, ttl: float) -> bool:
        return True

    async def renew(self, holder: str, execution_ids: Sequence[str], ttl: float) -> Renewal:
        return Renewal([], [])  # a cancel reaches the one process at once

    async def request_cancel(self, execution_id: str) -> None:
        try:
            self._db.execute(
                "UPDATE executions SET cancel_requested=1 WHERE id=? AND finished_at IS NULL",
                (execution_id,),
            )
        except sqlite3.Error as exc:
            raise self._write_failed("request a cancel", exc) from exc

    async def release(self, holder: str, execution_ids: Sequence[str]) -> None:
        return None

    async def announce(self, holder: str, ttl: float) -> list[str]:
        return []

    async def retire(self, holder: str) -> None:
        return None

    async def claimable(self, limit: int) -> list[Execution]:
        return self._many(
            f"SELECT {_COLUMNS} FROM executions WHERE finished_at IS NULL"
            " ORDER BY created_at LIMIT ?",
            (limit,),
        )

    async def notify(self, topic: str, execution_id: str) -> None:
        for listener in self._notice_listeners:
            listener(topic, execution_id)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    # --- lifecycle ----------------------------------------------------------------
    async def check(self) -> None:
        try:
            self._db.execute("SELECT 1 FROM executions LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store unavailable: {exc}") from exc
        await self.writable()

    async def writable(self) -> None:
        """After a failed write, only a probe that needs new pages (tried at most once a
        second) says the store takes writes again: a small write may still fit."""
        if self._write_failure is None:
            return
        now = time.monotonic()
        if now - self._probed_at >= _PROBE_INTERVAL:
            self._probed_at = now
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("INSERT INTO write_probe VALUES (zeroblob(?))", (_PROBE,))
                    self._db.execute("DELETE FROM write_probe")
            except sqlite3.Error as exc:
                self._write_failure = str(exc)
            else:
                self._write_failure = None
                return
        raise StoreError(f"store cannot write: {self._write_failure}")

    def _write_failed(self, what: str, exc: sqlite3.Error) -> StoreError:
        if not isinstance(exc, sqlite3.IntegrityError):
            self._write_failure = str(exc)
        return StoreError(f"cannot {what}: {exc}")

    # --- the store's contents ------------------------------------------------------
    # One process per data directory, on a file: its contents are not lost while it runs.
    async def epoch(self) -> str:
        return "sqlite"

    async def restore(
        self,
        execution: Execution,
        sealed_token: bytes | None,
        *,
        holder: str,
        lease_seconds: float,
    ) -> bool:
        return False

    def followed(self) -> list[str]:
        return self._hub.followed()

    def end_lost(self, execution_id: str) -> None:
        self._hub.end_lost(execution_id)

    async def close(self) -> None:
        self._db.close()
        os.close(self._lock)


def _execution_from_row(row: tuple[Any, ...]) -> Execution:
    (
        execution_id,
        owner,
        project_id,
        sid,
        request_json,
        status,
        created_at,
        updated_at,
        deadline_at,
        finished_at,
        idempotency_key,
        request_hash,
        upstream_id,
        create_started,
        cancel_requested,
        code,
        message,
        data,
        polls,
        retries,
        last_seq,
        logs,
    ) = row
    request = ExecutionRequest.from_stored(project_id, sid, json.loads(request_json))
    status_value = Status(status)
    outcome = (
        Outcome(status_value, int(code), message or "", json.loads(data) if data else None)
        if finished_at is not None
        else None
    )
    return Execution(
        id=execution_id,
        request=request,
        status=status_value,
        created_at=created_at,
        updated_at=updated_at,
        deadline_at=deadline_at,
        owner=owner,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        upstream_id=upstream_id,
        create_started=bool(create_started),
        cancel_requested=bool(cancel_requested),
        finished_at=finished_at,
        outcome=outcome,
        polls=polls,
        retries=retries,
        last_seq=last_seq,
        logs=json.loads(logs) if logs else [],
    )
