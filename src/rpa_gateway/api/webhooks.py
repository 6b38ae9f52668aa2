"""Webhook endpoints and their deliveries (HTTP only: the registry does the work)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from rpa_gateway.api.auth import Caller, is_admin
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.api.openapi_docs import errors
from rpa_gateway.api.paging import page_after
from rpa_gateway.cursors import encode_position
from rpa_gateway.webhooks.model import Delivery, DeliveryStatus, Endpoint
from rpa_gateway.webhooks.registry import (
    Changes,
    EndpointDisabled,
    WebhookNotFound,
    WebhookRegistry,
)
from rpa_gateway.webhooks.store import DeliveryBusy, TooManyEndpoints

router = APIRouter(prefix="/rpa/v1/webhooks", tags=["webhooks"])
T = TypeVar("T")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="https, or http to RPA_WEBHOOK_ALLOW_HOSTS")
    events: list[str] | None = Field(
        default=None,
        description="execution.succeeded, execution.failed, execution.cancelled,"
        " execution.timed_out (the default: these four), execution.started",
    )
    project_id: str | None = Field(default=None, description="only this project's executions")
    description: str = ""


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = None
    project_id: str | None = Field(default=None, description="null: every project")
    description: str | None = None
    enabled: bool | None = None


class WebhookView(BaseModel):
    id: str
    url: str
    events: list[str]
    project_id: str | None
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = Field(
        description="while set, the previous secret signs beside the current one"
    )

    @classmethod
    def of(cls, endpoint: Endpoint) -> WebhookView:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=list(endpoint.events),
            project_id=endpoint.project_id,
            description=endpoint.description,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            failing_since=_time(endpoint.failing_since),
            created_at=_when(endpoint.created_at),
            updated_at=_when(endpoint.updated_at),
            previous_secret_until=_time(endpoint.previous_until),
        )


class WebhookWithSecret(WebhookView):
    secret: str = Field(description="signs every delivery; shown this once")

    @classmethod
    def of(cls, endpoint: Endpoint) -> WebhookWithSecret:
        return cls(**WebhookView.of(endpoint).model_dump(), secret=endpoint.secret)


class WebhookList(BaseModel):
    items: list[WebhookView]


class DeliveryView(BaseModel):
    id: str = Field(description="the webhook-id header: the same for every attempt")
    event_type: str
    execution_id: str | None
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="HTTP status of the last attempt")
    last_latency_ms: float | None
    last_response: str | None = Field(description="the first 1 KB of the last reply")
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(
            id=delivery.id,
            event_type=delivery.event_type,
            execution_id=delivery.execution_id,
            status=delivery.status,
            attempts=delivery.attempts,
            created_at=_when(delivery.created_at),
            next_attempt_at=_time(delivery.next_attempt_at)
            if delivery.status is DeliveryStatus.PENDING
            else None,
            last_attempt_at=_time(delivery.last_attempt_at),
            last_status=delivery.last_status,
            last_latency_ms=delivery.last_latency_ms,
            last_response=delivery.last_response,
            last_error=delivery.last_error,
            delivered_at=_time(delivery.delivered_at),
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryView]
    next_cursor: str | None


class RecoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="failed deliveries created since then are sent again")


class Recovered(BaseModel):
    requeued: int


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _time(epoch: float | None) -> datetime | None:
    return _when(epoch) if epoch is not None else None


def registry(request: Request) -> WebhookRegistry:
    return components(request).webhooks


async def _found(call: Awaitable[T]) -> T:
    try:
        return await call
    except WebhookNotFound as exc:
        raise RequestRejected(404, "not_found", f"no webhook or delivery {exc}") from None
    except EndpointDisabled as exc:
        raise RequestRejected(
            409, "webhook_disabled", f"webhook {exc} is disabled; enable it first (PATCH)"
        ) from None
    except DeliveryBusy as exc:
        raise RequestRejected(
            409, "delivery_in_flight", f"delivery {exc} is being attempted now"
        ) from None


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    operation_id="add_webhook",
    responses=errors(400, 401, 409, 413, 422),
    summary="Register a webhook endpoint",
    description="Answers with its `secret` (`whsec_…`), shown this once: every delivery is "
    "signed with it as Standard Webhooks specifies.",
)
async def add_webhook(request: Request, token: Caller, body: WebhookIn) -> WebhookWithSecret:
    webhooks = registry(request)
    try:
        endpoint = await webhooks.add(
            token, body.url, body.events, body.project_id, body.description
        )
    except TooManyEndpoints as exc:
        raise RequestRejected(
            409,
            "too_many_webhooks",
            f"this caller has {exc} webhooks, as many as it may (RPA_WEBHOOKS_PER_TOKEN)",
        ) from None
    return WebhookWithSecret.of(endpoint)


@router.get(
    "",
    response_model=WebhookList,
    operation_id="list_webhooks",
    responses=errors(401),
    summary="This caller's webhook endpoints (an operator's: every caller's)",
)
async def list_webhooks(request: Request, token: Caller) -> WebhookList:
    endpoints = await registry(request).endpoints(token, every_owner=is_admin(request, token))
    return WebhookList(items=[WebhookView.of(e) for e in endpoints])


@router.get(
    "/{webhook_id}",
    response_model=WebhookView,
    operation_id="get_webhook",
    responses=errors(401, 404),
    summary="One webhook endpoint (never its secret)",
)
async def get_webhook(request: Request, token: Caller, webhook_id: str) -> WebhookView:
    webhooks = registry(request)
    every = is_admin(request, token)
    return WebhookView.of(await _found(webhooks.get(token, webhook_id, every_owner=every)))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookView,
    operation_id="change_webhook",
    responses=errors(400, 401, 404, 413, 422),
    summary="Change an endpoint's url, events, project filter, description or enabled",
    description="Enabling a disabled endpoint clears its failure record.",
)
async def change_webhook(
    request: Request, token: Caller, webhook_id: str, body: WebhookPatch
) -> WebhookView:
    given = body.model_fields_set
    changes = Changes(
        url=body.url,
        events=body.events,
        project_id=body.project_id,
        clear_project="project_id" in given and body.project_id is None,
        description=body.description,
        enabled=body.enabled,
    )
    webhooks = registry(request)
    every = is_admin(request, token)
    return WebhookView.of(
        await _found(webhooks.change(token, webhook_id, changes, every_owner=every))
    )


@router.delete(
    "/{webhook_id}",
    status_code=204,
    operation_id="remove_webhook",
    responses=errors(401, 404),
    summary="Remove an endpoint; its pending deliveries fail",
)
async def remove_webhook(request: Request, token: Caller, webhook_id: str) -> Response:
    webhooks = registry(request)
    await _found(webhooks.remove(token, webhook_id, every_owner=is_admin(request, token)))
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    operation_id="rotate_webhook_secret",
    responses=errors(401, 404),
    summary="A new secret; the old one signs beside it for RPA_WEBHOOK_ROTATION_SECONDS",
)
async def rotate_secret(request: Request, token: Caller, webhook_id: str) -> WebhookWithSecret:
    webhooks = registry(request)
    every = is_admin(request, token)
    return WebhookWithSecret.of(await _found(webhooks.rotate(token, webhook_id, every_owner=every)))


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=DeliveryView,
    operation_id="test_webhook",
    responses=errors(401, 404, 409),
    summary="Send a webhook.test event",
)
async def test_webhook(request: Request, token: Caller, webhook_id: str) -> DeliveryView:
    webhooks = registry(request)
    every = is_admin(request, token)
    return DeliveryView.of(await _found(webhooks.test(token, webhook_id, every_owner=every)))


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    operation_id="list_webhook_deliveries",
    responses=errors(400, 401, 404),
    summary="An endpoint's deliveries, newest first",
)
async def list_deliveries(
    request: Request,
    token: Caller,
    webhook_id: str,
    status: Annotated[DeliveryStatus | None, Query(description="only this status")] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryPage:
    before = page_after(cursor)
    webhooks = registry(request)
    found = await _found(
        webhooks.deliveries(
            token,
            webhook_id,
            every_owner=is_admin(request, token),
            status=status,
            before=before,
            limit=limit + 1,
        )
    )
    page, more = found[:limit], len(found) > limit
    return DeliveryPage(
        items=[DeliveryView.of(d) for d in page],
        next_cursor=encode_position(page[-1].created_at, page[-1].id) if more and page else None,
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryView,
    operation_id="retry_webhook_delivery",
    responses=errors(401, 404, 409),
    summary="Send a delivery again now, however it ended",
)
async def retry_delivery(
    request: Request, token: Caller, webhook_id: str, delivery_id: str
) -> DeliveryView:
    webhooks = registry(request)
    every = is_admin(request, token)
    return DeliveryView.of(
        await _found(webhooks.retry(token, webhook_id, delivery_id, every_owner=every))
    )


@router.post(
    "/{webhook_id}/recover",
    status_code=202,
    response_model=Recovered,
    operation_id="recover_webhook_deliveries",
    responses=errors(400, 401, 404, 409, 413, 422),
    summary="Send again every failed delivery created since a time",
)
async def recover(request: Request, token: Caller, webhook_id: str, body: RecoverIn) -> Recovered:
    webhooks = registry(request)
    every = is_admin(request, token)
    since = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
    count = await _found(webhooks.recover(token, webhook_id, since.timestamp(), every_owner=every))
    return Recovered(requeued=count)
