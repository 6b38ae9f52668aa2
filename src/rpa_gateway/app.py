"""Builds the FastAPI application and wires store, backend and supervisor in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from rpa_gateway import __version__
from rpa_gateway.api import compat, health
from rpa_gateway.api.components import Components
from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.backends.base import Backend
from rpa_gateway.config import Settings
from rpa_gateway.service import ExecutionService
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.supervisor import PollPolicy, Supervisor

log = logging.getLogger(__name__)

DATABASE_FILE = "rpa-gateway.db"


def poll_policy(settings: Settings) -> PollPolicy:
    return PollPolicy(
        first_delay=min(settings.rpa_poll_first_delay, settings.xiaowu_rpa_task_query_interval),
        backoff=settings.rpa_poll_backoff,
        ceiling=settings.xiaowu_rpa_task_query_interval,
        retry_base_delay=settings.rpa_retry_base_delay,
        max_consecutive_faults=settings.rpa_query_max_failures,
        create_connect_retries=settings.rpa_create_connect_retries,
    )


def build_backend(settings: Settings) -> Backend:
    return AstronBackend(
        create_url=settings.xiaowu_rpa_task_create_url,
        query_url=settings.xiaowu_rpa_task_query_url,
        cancel_url=settings.xiaowu_rpa_task_cancel_url,
        connect_timeout=settings.rpa_upstream_connect_timeout,
        read_timeout=settings.rpa_upstream_read_timeout,
        max_connections=settings.rpa_upstream_max_connections,
        keepalive_timeout=settings.rpa_upstream_keepalive,
    )


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}" if url else "(unset)"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SqliteStore(settings.rpa_data_dir / DATABASE_FILE)
        backend = build_backend(settings)
        supervisor = Supervisor(store, backend, poll_policy(settings))
        executions = ExecutionService(store, supervisor, timeout=settings.xiaowu_rpa_timeout)
        interrupted = executions.close_interrupted()
        if interrupted:
            log.warning("ended %d executions interrupted by the previous shutdown", interrupted)
        app.state.components = Components(settings, store, executions)
        log.info(
            "backend %s: create %s, query %s; store %s",
            backend.name,
            _where(settings.xiaowu_rpa_task_create_url),
            _where(settings.xiaowu_rpa_task_query_url),
            store.path,
        )
        try:
            yield
        finally:
            await supervisor.stop()
            await backend.aclose()
            store.close()

    app = FastAPI(
        title="rpa-gateway",
        version=__version__,
        description="Runs RPA robots for AI agent workflows and streams their outcome as SSE.",
        lifespan=lifespan,
    )
    app.include_router(compat.router)
    app.include_router(health.router)
    app.add_exception_handler(Exception, _internal_error)
    return app


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)
