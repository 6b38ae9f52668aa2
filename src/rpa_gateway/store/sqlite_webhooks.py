"""The webhook tables in the SQLite store (its connection, its transactions).

Deliveries of a terminal event are inserted by :func:`enqueue` inside the transaction
that stores the event (``SqliteStore.finish``): no crash can keep one without the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from rpa_gateway.store.base import StoreError
from rpa_gateway.webhooks.model import Delivery, DeliveryStatus, Endpoint, subscribed
from rpa_gateway.webhooks.store import DeliveryBusy, TooManyEndpoints

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,
    project_id      TEXT,
    description     TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    failing_since   REAL,
    disabled_reason TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_by_owner ON webhooks (owner, enabled);
CREATE TABLE IF NOT EXISTS deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    execution_id    TEXT,
    event_type      TEXT NOT NULL,
    event_at        REAL NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    claimed_by      TEXT,
    claim_until     REAL,
    last_attempt_at REAL,
    last_status     INTEGER,
    last_latency_ms REAL,
    last_response   TEXT,
    last_error      TEXT,
    delivered_at    REAL,
    body            BLOB
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_webhook
    ON deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_claimed ON deliveries (webhook_id)
    WHERE claim_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (created_at)
    WHERE status != 'pending';
"""

# Columns named as the dataclasses' fields, in their order.
_ENDPOINT_FIELDS = tuple(f.name for f in dataclasses.fields(Endpoint))
_DELIVERY_FIELDS = tuple(f.name for f in dataclasses.fields(Delivery))
_ENDPOINT_COLUMNS = ", ".join(_ENDPOINT_FIELDS)
_DELIVERY_COLUMNS = ", ".join(_DELIVERY_FIELDS)


def enqueue(
    db: sqlite3.Connection,
    owner: str,
    project_id: str,
    execution_id: str,
    event_type: str,
    now: float,
) -> None:
    """Within the caller's transaction: a delivery of this event to each of the owner's
    enabled endpoints that want it."""
    db.execute(
        "INSERT INTO deliveries (id, webhook_id, execution_id, event_type, event_at, status,"
        " created_at, next_attempt_at)"
        " SELECT 'msg_' || lower(hex(randomblob(16))), id, ?, ?, ?, 'pending', ?, ?"
        " FROM webhooks WHERE owner=? AND enabled=1"
        " AND (project_id IS NULL OR project_id=?) AND instr(events, ?) > 0",
        (execution_id, event_type, now, now, now, owner, project_id, subscribed(event_type)),
    )


class SqliteWebhooks:
    """The WebhookStore of one SQLite database (the execution store's connection)."""

    def __init__(
        self, db: sqlite3.Connection, write_failed: Callable[[str, sqlite3.Error], StoreError]
    ) -> None:
        self._db = db
        self._write_failed = write_failed
        self._to_save: list[tuple[Delivery, bool, asyncio.Future[None]]] = []

    def _write(self, what: str, sql: str, args: tuple[Any, ...] | dict[str, Any]) -> sqlite3.Cursor:
        try:
            with self._db:
                return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._write_failed(what, exc) from exc

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read webhooks: {exc}") from exc

    async def add_endpoint(self, endpoint: Endpoint, limit: int) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                (count,) = self._db.execute(
                    "SELECT count(*) FROM webhooks WHERE owner=?", (endpoint.owner,)
                ).fetchone()
                if count >= limit:
                    raise TooManyEndpoints(limit)
                self._db.execute(
                    f"INSERT INTO webhooks ({_ENDPOINT_COLUMNS})"
                    f" VALUES ({','.join('?' * len(_ENDPOINT_FIELDS))})",
                    _endpoint_row(endpoint),
                )
        except sqlite3.Error as exc:
            raise self._write_failed("add a webhook", exc) from exc

    async def endpoints(self, owner: str | None) -> list[Endpoint]:
        if owner is None:
            rows = self._read(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhooks ORDER BY created_at, id", ()
            )
        else:
            rows = self._read(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhooks WHERE owner=? ORDER BY created_at, id",
                (owner,),
            )
        return [_endpoint(row) for row in rows]

    async def endpoint(self, webhook_id: str) -> Endpoint | None:
        rows = self._read(f"SELECT {_ENDPOINT_COLUMNS} FROM webhooks WHERE id=?", (webhook_id,))
        return _endpoint(rows[0]) if rows else None

    async def update_endpoint(self, endpoint: Endpoint, *, reenabled: bool = False) -> None:
        self._write(
            "update a webhook",
            "UPDATE webhooks SET url=?, events=?, project_id=?, description=?, enabled=?,"
            " secret=?, previous_secret=?, previous_until=?, updated_at=?,"
            " failing_since=CASE WHEN ? THEN NULL ELSE failing_since END,"
            " disabled_reason=CASE WHEN ? THEN NULL ELSE disabled_reason END WHERE id=?",
            (
                endpoint.url,
                json.dumps(list(endpoint.events)),
                endpoint.project_id,
                endpoint.description,
                int(endpoint.enabled),
                endpoint.secret,
                endpoint.previous_secret,
                endpoint.previous_until,
                endpoint.updated_at,
                int(reenabled),
                int(reenabled),
                endpoint.id,
            ),
        )

    async def remove_endpoint(self, webhook_id: str) -> bool:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                removed = self._db.execute("DELETE FROM webhooks WHERE id=?", (webhook_id,))
                self._db.execute(
                    "UPDATE deliveries SET status='failed', last_error='the endpoint was removed',"
                    " claimed_by=NULL, claim_until=NULL WHERE webhook_id=? AND status='pending'",
                    (webhook_id,),
                )
        except sqlite3.Error as exc:
            raise self._write_failed("remove a webhook", exc) from exc
        return removed.rowcount > 0

    async def endpoint_failed(self, webhook_id: str, now: float) -> float | None:
        row = self._write(
            "record a failed delivery",
            "UPDATE webhooks SET failing_since=coalesce(failing_since, ?) WHERE id=?"
            " RETURNING failing_since",
            (now, webhook_id),
        ).fetchone()
        return float(row[0]) if row is not None else None

    async def disable_endpoint(self, webhook_id: str, reason: str) -> None:
        self._write(
            "disable a webhook",
            "UPDATE webhooks SET enabled=0, disabled_reason=? WHERE id=?",
            (reason, webhook_id),
        )

    async def add_delivery(self, delivery: Delivery) -> None:
        self._write(
            "add a delivery",
            f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"
            f" VALUES ({','.join('?' * len(_DELIVERY_FIELDS))})",
            _delivery_row(delivery),
        )

    async def next_due(self, now: float) -> float | None:
        rows = self._read(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status='pending'"
            " AND (claim_until IS NULL OR claim_until<?)",
            (now,),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def claim_due(
        self, holder: str, now: float, limit: int, lease_seconds: float, per_endpoint: int
    ) -> list[Delivery]:
        # Each endpoint's first due deliveries (an index seek each, however long a backlog),
        # then its share: what is claimed for it now counts against it, so one with a
        # backlog never takes the turns of the others.
        rows = self._write(
            "claim deliveries",
            "UPDATE deliveries SET claimed_by=:holder, claim_until=:until WHERE id IN ("
            " WITH candidates AS (SELECT d.id, d.webhook_id, d.next_attempt_at"
            "  FROM webhooks w JOIN deliveries d ON d.id IN (SELECT id FROM deliveries"
            "   WHERE webhook_id=w.id AND status='pending' AND next_attempt_at<=:now"
            "   AND (claim_until IS NULL OR claim_until<:now)"
            "   ORDER BY next_attempt_at LIMIT :share)),"
            " ranked AS (SELECT id, webhook_id, next_attempt_at, ROW_NUMBER() OVER"
            "  (PARTITION BY webhook_id ORDER BY next_attempt_at) AS turn FROM candidates),"
            " held AS (SELECT webhook_id, count(*) AS n FROM deliveries"
            "  WHERE claim_until IS NOT NULL AND claim_until>=:now GROUP BY webhook_id)"
            " SELECT ranked.id FROM ranked LEFT JOIN held USING (webhook_id)"
            " WHERE ranked.turn + coalesce(held.n, 0) <= :share"
            " ORDER BY ranked.next_attempt_at LIMIT :limit)"
            f" RETURNING {_DELIVERY_COLUMNS}",
            {
                "holder": holder,
                "until": now + lease_seconds,
                "now": now,
                "share": per_endpoint,
                "limit": limit,
            },
        ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda d: d.next_attempt_at or 0)

    async def release_claims(self) -> int:
        cursor = self._write(
            "release delivery claims",
            "UPDATE deliveries SET claimed_by=NULL, claim_until=NULL"
            " WHERE status='pending' AND claimed_by IS NOT NULL",
            (),
        )
        return cursor.rowcount

    async def save_delivery(self, delivery: Delivery, *, endpoint_ok: bool = False) -> None:
        # Group commit: the attempts that end in one turn of the loop (replies to one
        # claim come together) are written in one transaction, most of whose cost is the
        # index pages it writes whatever the rows.
        if not self._to_save:
            asyncio.get_running_loop().call_soon(self._save_all)
        saved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_save.append((delivery, endpoint_ok, saved))
        await saved

    def _save_all(self) -> None:
        batch, self._to_save = self._to_save, []
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for delivery, endpoint_ok, _ in batch:
                    self._save_delivery(delivery)
                    if endpoint_ok:
                        self._db.execute(
                            "UPDATE webhooks SET failing_since=NULL"
                            " WHERE id=? AND failing_since IS NOT NULL",
                            (delivery.webhook_id,),
                        )
        except sqlite3.Error as exc:
            failure = self._write_failed("record a delivery", exc)
            for _, _, saved in batch:
                if not saved.done():
                    saved.set_exception(failure)
            return
        for _, _, saved in batch:
            if not saved.done():
                saved.set_result(None)

    def _save_delivery(self, delivery: Delivery) -> None:
        self._db.execute(
            "UPDATE deliveries SET status=?, attempts=?, next_attempt_at=?, last_attempt_at=?,"
            " last_status=?, last_latency_ms=?, last_response=?, last_error=?, delivered_at=?,"
            # A body is kept only while it may be sent again (a retry rebuilds it).
            " body=CASE WHEN ? = 'pending' THEN coalesce(body, ?) END,"
            " claimed_by=NULL, claim_until=NULL WHERE id=?",
            (
                delivery.status.value,
                delivery.attempts,
                delivery.next_attempt_at,
                delivery.last_attempt_at,
                delivery.last_status,
                delivery.last_latency_ms,
                delivery.last_response,
                delivery.last_error,
                delivery.delivered_at,
                delivery.status.value,
                delivery.body,
                delivery.id,
            ),
        )

    async def delivery(self, delivery_id: str) -> Delivery | None:
        rows = self._read(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id=?", (delivery_id,))
        return _delivery(rows[0]) if rows else None

    async def deliveries(
        self,
        webhook_id: str,
        status: DeliveryStatus | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> list[Delivery]:
        where: list[str] = ["webhook_id=?"]
        args: list[Any] = [webhook_id]
        if status is not None:
            where.append("status=?")
            args.append(status.value)
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            args += [before[0], before[1]]
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (*args, limit),
        )
        return [_delivery(row) for row in rows]

    async def requeue(self, webhook_id: str, delivery_id: str, now: float) -> Delivery | None:
        row = self._write(
            "retry a delivery",
            "UPDATE deliveries SET status='pending', attempts=0, next_attempt_at=?"
            " WHERE id=? AND webhook_id=? AND (claim_until IS NULL OR claim_until<?)"
            f" RETURNING {_DELIVERY_COLUMNS}",
            (now, delivery_id, webhook_id, now),
        ).fetchone()
        if row is not None:
            return _delivery(row)
        existing = await self.delivery(delivery_id)
        if existing is not None and existing.webhook_id == webhook_id:
            raise DeliveryBusy(delivery_id)
        return None

    async def recover(self, webhook_id: str, since: float, now: float) -> int:
        cursor = self._write(
            "recover deliveries",
            "UPDATE deliveries SET status='pending', attempts=0, next_attempt_at=?"
            " WHERE webhook_id=? AND status='failed' AND created_at>=?",
            (now, webhook_id, since),
        )
        return cursor.rowcount

    async def purge(self, before: float, batch: int) -> int:
        cursor = self._write(
            "purge deliveries",
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
            " WHERE status != 'pending' AND created_at < ? LIMIT ?)",
            (before, batch),
        )
        return cursor.rowcount

    async def outbox_depth(self) -> int:
        (count,) = self._read("SELECT count(*) FROM deliveries WHERE status='pending'", ())[0]
        return int(count)


def _endpoint_row(endpoint: Endpoint) -> tuple[Any, ...]:
    stored = {"events": json.dumps(list(endpoint.events)), "enabled": int(endpoint.enabled)}
    return tuple(stored.get(name, getattr(endpoint, name)) for name in _ENDPOINT_FIELDS)


def _endpoint(row: Any) -> Endpoint:
    fields = dict(zip(_ENDPOINT_FIELDS, row, strict=True))
    fields["events"] = tuple(json.loads(fields["events"]))
    fields["enabled"] = bool(fields["enabled"])
    return Endpoint(**fields)


def _delivery_row(delivery: Delivery) -> tuple[Any, ...]:
    return tuple(
        delivery.status.value if name == "status" else getattr(delivery, name)
        for name in _DELIVERY_FIELDS
    )


def _delivery(row: Any) -> Delivery:
    fields = dict(zip(_DELIVERY_FIELDS, row, strict=True))
    fields["status"] = DeliveryStatus(fields["status"])
    if fields["body"] is not None:
        fields["body"] = bytes(fields["body"])
    return Delivery(**fields)
