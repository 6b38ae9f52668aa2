"""The parts the HTTP layer reaches through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from rpa_gateway.backends.base import Backend
from rpa_gateway.config import Settings
from rpa_gateway.lifecycle import Lifecycle
from rpa_gateway.ping_sweep import PingSweep
from rpa_gateway.service import ExecutionService
from rpa_gateway.store.base import Store
from rpa_gateway.telemetry import Telemetry
from rpa_gateway.webhooks.registry import WebhookRegistry


@dataclass(frozen=True, slots=True)
class Components:
    settings: Settings
    store: Store
    executions: ExecutionService
    lifecycle: Lifecycle
    telemetry: Telemetry
    pings: PingSweep
    backend: Backend
    webhooks: WebhookRegistry


def components(request: Request) -> Components:
    return cast(Components, request.app.state.components)
