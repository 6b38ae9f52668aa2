"""The webhook tables' seam: endpoints, and deliveries waiting, done or failed.  The
execution stores record a terminal event's deliveries in the same atomic step as the
event (``SqliteStore.finish``); everything else goes through here."""

from __future__ import annotations

from typing import Protocol

from rpa_gateway.webhooks.model import Delivery, DeliveryStatus, Endpoint


class TooManyEndpoints(Exception):
    """The caller has as many endpoints as it may (RPA_WEBHOOKS_PER_TOKEN)."""


class DeliveryBusy(Exception):
    """The delivery is being attempted right now."""


class WebhookStore(Protocol):
    async def add_endpoint(self, endpoint: Endpoint, limit: int) -> None:
        """Raises TooManyEndpoints when its owner has ``limit`` already."""
        ...

    async def endpoints(self, owner: str | None) -> list[Endpoint]:
        """The owner's endpoints (every owner's for None), oldest first."""
        ...

    async def endpoint(self, webhook_id: str) -> Endpoint | None: ...

    async def update_endpoint(self, endpoint: Endpoint, *, reenabled: bool = False) -> None:
        """Store what a caller may change: url, events, project, description, enabled,
        secrets (a rotation); ``reenabled`` clears the failure record."""
        ...

    async def remove_endpoint(self, webhook_id: str) -> bool:
        """Remove it; its pending deliveries fail."""
        ...

    async def endpoint_failed(self, webhook_id: str, now: float) -> float | None:
        """A failed attempt: since when the endpoint has been failing (None: it is gone)."""
        ...

    async def disable_endpoint(self, webhook_id: str, reason: str) -> None: ...

    async def add_delivery(self, delivery: Delivery) -> None: ...

    async def next_due(self, now: float) -> float | None:
        """When the next unclaimed pending delivery falls due (None: there is none)."""
        ...

    async def claim_due(
        self, holder: str, now: float, limit: int, lease_seconds: float, per_endpoint: int
    ) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due by ``now``, none claimed by a live holder,
        at most ``per_endpoint`` claimed for one endpoint at a time, now held by
        ``holder`` for ``lease_seconds``."""
        ...

    async def release_claims(self) -> int:
        """Free every claim: at start-up of the one process a store has (SQLite), what a
        killed predecessor held is due again at once; how many."""
        ...

    async def save_delivery(self, delivery: Delivery, *, endpoint_ok: bool = False) -> None:
        """The delivery after an attempt (its claim released); ``endpoint_ok`` (it was
        delivered): in the same step, its endpoint is failing no longer."""
        ...

    async def delivery(self, delivery_id: str) -> Delivery | None: ...

    async def deliveries(
        self,
        webhook_id: str,
        status: DeliveryStatus | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> list[Delivery]:
        """Newest first, after the cursor ``before`` (created_at, id)."""
        ...

    async def requeue(self, webhook_id: str, delivery_id: str, now: float) -> Delivery | None:
        """Send it again from now, the retry schedule from its start, however it ended.
        Raises DeliveryBusy while it is being attempted."""
        ...

    async def recover(self, webhook_id: str, since: float, now: float) -> int:
        """Send again every failed delivery created since ``since``; how many."""
        ...

    async def purge(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` delivered or failed deliveries created before ``before``."""
        ...

    async def outbox_depth(self) -> int:
        """Deliveries still pending, all endpoints together."""
        ...
