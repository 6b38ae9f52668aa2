"""Webhook operations the HTTP layer calls: register, list, change, rotate, test, remove an
endpoint; inspect and send again its deliveries.  A caller sees its own endpoints; an
operator (admin key) every caller's."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from rpa_gateway.backends.base import InvalidRequest
from rpa_gateway.security import TokenVault
from rpa_gateway.webhooks.addresses import url_problem
from rpa_gateway.webhooks.model import (
    EVENT_TYPES,
    TERMINAL_EVENTS,
    TEST,
    Delivery,
    DeliveryStatus,
    Endpoint,
)
from rpa_gateway.webhooks.secrets import SecretSealer
from rpa_gateway.webhooks.signing import new_secret
from rpa_gateway.webhooks.store import WebhookStore

MAX_DESCRIPTION = 500
MAX_PROJECT_ID = 200


class WebhookNotFound(Exception):
    """No such endpoint (or delivery) for this caller: another owner's look the same."""


class EndpointDisabled(Exception):
    """The endpoint is disabled: nothing is sent to it until it is enabled again."""


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where endpoints may point (RPA_WEBHOOK_ALLOW_HOSTS, RPA_WEBHOOK_ALLOW_PRIVATE)."""

    allow_hosts: Collection[str]
    allow_private: bool


@dataclass(frozen=True, slots=True)
class Changes:
    """What a PATCH may change; None leaves it."""

    url: str | None = None
    events: Sequence[str] | None = None
    project_id: str | None = None
    clear_project: bool = False
    description: str | None = None
    enabled: bool | None = None


class WebhookRegistry:
    def __init__(
        self,
        webhooks: WebhookStore,
        vault: TokenVault,
        destinations: Destinations,
        *,
        per_caller: int,
        rotation_seconds: float,
        wake_worker: Callable[[], None] = lambda: None,
        endpoints_added: Callable[[str], None] = lambda owner: None,
    ) -> None:
        self._webhooks = webhooks
        self._vault = vault
        self._sealer = SecretSealer(vault)
        self._destinations = destinations
        self._per_caller = per_caller
        self._rotation_seconds = rotation_seconds
        self._wake_worker = wake_worker
        self._endpoints_added = endpoints_added

    async def add(
        self,
        token: str,
        url: str,
        events: Sequence[str] | None,
        project_id: str | None,
        description: str,
    ) -> Endpoint:
        """The new endpoint, its secret in it (shown this once).  Raises InvalidRequest,
        TooManyEndpoints."""
        now = time.time()
        endpoint = Endpoint(
            id=f"wh_{uuid.uuid4().hex}",
            owner=self._vault.fingerprint(token),
            url=self._checked_url(url),
            events=_checked_events(events),
            project_id=_checked_project(project_id),
            description=_checked_description(description),
            enabled=True,
            secret=new_secret(),
            created_at=now,
            updated_at=now,
        )
        await self._webhooks.add_endpoint(self._sealer.sealed(endpoint), self._per_caller)
        self._endpoints_added(endpoint.owner)
        return endpoint

    async def endpoints(self, token: str, *, every_owner: bool) -> list[Endpoint]:
        return await self._webhooks.endpoints(None if every_owner else self._owner(token))

    async def get(self, token: str, webhook_id: str, *, every_owner: bool) -> Endpoint:
        endpoint = await self._webhooks.endpoint(webhook_id)
        if endpoint is None or not (every_owner or self._vault.owns(endpoint.owner, token)):
            raise WebhookNotFound(webhook_id)
        return endpoint

    async def change(
        self, token: str, webhook_id: str, changes: Changes, *, every_owner: bool
    ) -> Endpoint:
        endpoint = await self.get(token, webhook_id, every_owner=every_owner)
        if changes.url is not None:
            endpoint.url = self._checked_url(changes.url)
        if changes.events is not None:
            endpoint.events = _checked_events(changes.events)
        if changes.clear_project:
            endpoint.project_id = None
        elif changes.project_id is not None:
            endpoint.project_id = _checked_project(changes.project_id)
        if changes.description is not None:
            endpoint.description = _checked_description(changes.description)
        reenabled = changes.enabled is True and not endpoint.enabled
        if changes.enabled is not None:
            endpoint.enabled = changes.enabled
        if reenabled:
            endpoint.failing_since = endpoint.disabled_reason = None
        endpoint.updated_at = time.time()
        await self._webhooks.update_endpoint(self._sealer.sealed(endpoint), reenabled=reenabled)
        return endpoint

    async def remove(self, token: str, webhook_id: str, *, every_owner: bool) -> None:
        await self.get(token, webhook_id, every_owner=every_owner)
        await self._webhooks.remove_endpoint(webhook_id)

    async def rotate(self, token: str, webhook_id: str, *, every_owner: bool) -> Endpoint:
        """A new secret (shown this once); the old one signs beside it for the rotation
        window, so receivers can switch without losing a message."""
        endpoint = await self.get(token, webhook_id, every_owner=every_owner)
        now = time.time()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_until = now + self._rotation_seconds
        endpoint.secret = new_secret()
        endpoint.updated_at = now
        await self._webhooks.update_endpoint(self._sealer.sealed(endpoint))
        return endpoint

    async def test(self, token: str, webhook_id: str, *, every_owner: bool) -> Delivery:
        """A ``webhook.test`` event, delivered as any other.  Raises EndpointDisabled."""
        endpoint = await self._enabled(token, webhook_id, every_owner=every_owner)
        now = time.time()
        delivery = Delivery(
            id=f"msg_{secrets.token_hex(16)}",
            webhook_id=endpoint.id,
            execution_id=None,
            event_type=TEST,
            event_at=now,
            status=DeliveryStatus.PENDING,
            created_at=now,
            next_attempt_at=now,
        )
        await self._webhooks.add_delivery(delivery)
        self._wake_worker()
        return delivery

    async def deliveries(
        self,
        token: str,
        webhook_id: str,
        *,
        every_owner: bool,
        status: DeliveryStatus | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> list[Delivery]:
        await self.get(token, webhook_id, every_owner=every_owner)
        return await self._webhooks.deliveries(webhook_id, status, before, limit)

    async def retry(
        self, token: str, webhook_id: str, delivery_id: str, *, every_owner: bool
    ) -> Delivery:
        await self._enabled(token, webhook_id, every_owner=every_owner)
        delivery = await self._webhooks.requeue(webhook_id, delivery_id, time.time())
        if delivery is None:
            raise WebhookNotFound(delivery_id)
        self._wake_worker()
        return delivery

    async def recover(self, token: str, webhook_id: str, since: float, *, every_owner: bool) -> int:
        await self._enabled(token, webhook_id, every_owner=every_owner)
        count = await self._webhooks.recover(webhook_id, since, time.time())
        self._wake_worker()
        return count

    async def _enabled(self, token: str, webhook_id: str, *, every_owner: bool) -> Endpoint:
        endpoint = await self.get(token, webhook_id, every_owner=every_owner)
        if not endpoint.enabled:
            raise EndpointDisabled(webhook_id)
        return endpoint

    def _owner(self, token: str) -> str:
        return self._vault.fingerprint(token)

    def _checked_url(self, url: str) -> str:
        problem = url_problem(url, self._destinations.allow_hosts, self._destinations.allow_private)
        if problem is not None:
            raise InvalidRequest(problem, "url")
        return url


def _checked_events(events: Sequence[str] | None) -> tuple[str, ...]:
    if events is None:
        return TERMINAL_EVENTS
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidRequest(
            f"events: {', '.join(unknown)} unknown; one or more of {', '.join(EVENT_TYPES)}",
            "events",
        )
    if not events:
        raise InvalidRequest("events: at least one", "events")
    return tuple(e for e in EVENT_TYPES if e in events)


def _checked_project(project_id: str | None) -> str | None:
    if project_id is not None and not 0 < len(project_id) <= MAX_PROJECT_ID:
        raise InvalidRequest(f"project_id: 1 to {MAX_PROJECT_ID} characters", "project_id")
    return project_id


def _checked_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description: at most {MAX_DESCRIPTION} characters", "description")
    return description
