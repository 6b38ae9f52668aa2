"""Builds the FastAPI application and wires store, backend and supervisor in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.routing import Route

from rpa_gateway import __version__
from rpa_gateway.api import (
    compat,
    diagnose,
    executions,
    feed,
    health,
    metrics,
    monitor,
    projects,
)
from rpa_gateway.api import webhooks as webhooks_api
from rpa_gateway.api.components import Components
from rpa_gateway.api.refusals import install_error_handlers
from rpa_gateway.api.views import ExecutionView
from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.backends.base import Backend
from rpa_gateway.backends.local import LocalBackend
from rpa_gateway.backends.spawn import run_owner
from rpa_gateway.config import Settings, decode_key
from rpa_gateway.duration_models import DurationModels, SchedulePolicy
from rpa_gateway.housekeeping import run_housekeeping
from rpa_gateway.keys_file import KeysFile
from rpa_gateway.lifecycle import Lifecycle
from rpa_gateway.mcp.assembly import build_door
from rpa_gateway.mcp.http_endpoint import McpEndpoint
from rpa_gateway.mcp.sse_endpoint import SseMessagesEndpoint, SseStreamEndpoint
from rpa_gateway.ping_sweep import PingSweep
from rpa_gateway.security import TokenVault, key_fingerprint
from rpa_gateway.service import ExecutionService
from rpa_gateway.startup import CannotStart
from rpa_gateway.stewardship import Stewardship, new_holder_id
from rpa_gateway.store.base import Store, StoreError
from rpa_gateway.store.sqlite import SqliteStore
from rpa_gateway.supervisor import PollPolicy, Supervisor
from rpa_gateway.telemetry import Telemetry
from rpa_gateway.telemetry.calls import NO_CALLS, Calls
from rpa_gateway.webhooks.registry import Destinations, WebhookRegistry
from rpa_gateway.webhooks.secrets import SecretSealer
from rpa_gateway.webhooks.sender import Sender
from rpa_gateway.webhooks.worker import DeliveryPolicy, DeliveryWorker

if TYPE_CHECKING:
    from rpa_gateway.store.redis import RedisStore

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
        cancel_confirm_seconds=settings.rpa_cancel_confirm_seconds,
    )


def build_backend(settings: Settings, calls: Calls = NO_CALLS) -> Backend:
    if settings.backend == "local":
        return LocalBackend(
            settings.rpa_projects_dir,
            max_runs=settings.rpa_local_max_runs,
            kill_grace=settings.rpa_local_kill_grace,
            run_owner=run_owner(settings.rpa_data_dir),
            max_runs_per_caller=settings.rpa_local_max_runs_per_token,
            max_queued_per_caller=settings.rpa_local_max_queued_per_token,
            calls=calls,
        )
    return AstronBackend(
        create_url=settings.xiaowu_rpa_task_create_url,
        query_url=settings.xiaowu_rpa_task_query_url,
        cancel_url=settings.xiaowu_rpa_task_cancel_url,
        base_url=settings.rpa_upstream_base_url,
        contract=settings.rpa_upstream_contract,
        probe_ttl=settings.rpa_contract_probe_ttl,
        connect_timeout=settings.rpa_upstream_connect_timeout,
        read_timeout=settings.rpa_upstream_read_timeout,
        max_connections=settings.rpa_upstream_max_connections,
        keepalive_timeout=settings.rpa_upstream_keepalive,
        max_requests_per_second=settings.rpa_upstream_max_rps,
        calls=calls,
    )


def warn_without_projects(folder: Path, backend: Backend) -> None:
    """A service with nothing to run says so, naming where it looked (a relative
    RPA_PROJECTS_DIR is taken from the folder it was started in)."""
    where = folder.resolve()
    if not where.is_dir():
        log.warning("no projects: the projects folder %s (RPA_PROJECTS_DIR) does not exist", where)
    elif not backend.projects():
        log.warning(
            "no projects: the projects folder %s (RPA_PROJECTS_DIR) holds no folder with a"
            " project.toml",
            where,
        )


def build_webhooks(
    settings: Settings, store: Store, vault: TokenVault, holder: str, telemetry: Telemetry
) -> tuple[DeliveryWorker, WebhookRegistry]:
    """The delivery worker and the registry the API calls."""
    sender = Sender(
        timeout=settings.rpa_webhook_timeout,
        allow_private=settings.rpa_webhook_allow_private,
        user_agent=f"rpa-gateway/{__version__}",
    )
    policy = DeliveryPolicy(
        retry_schedule=settings.webhook_retry_delays,
        disable_after=settings.rpa_webhook_disable_after,
        max_result_bytes=settings.rpa_webhook_max_result_bytes,
    )
    worker = DeliveryWorker(
        store,
        store.webhooks,
        sender,
        policy,
        holder=holder,
        # An attempt takes at most the timeout (and its recording a moment): a dead
        # replica's claims are due again soon after.
        lease_seconds=2 * settings.rpa_webhook_timeout + 5,
        render=lambda execution: ExecutionView.of(execution).model_dump_json().encode(),
        sealer=SecretSealer(vault),
        observe=telemetry.webhook_attempt,
        outbox_depth=telemetry.count_outbox,
    )
    registry = WebhookRegistry(
        store.webhooks,
        vault,
        Destinations(settings.webhook_allow_hosts, settings.rpa_webhook_allow_private),
        per_caller=settings.rpa_webhooks_per_token,
        rotation_seconds=settings.rpa_webhook_rotation_seconds,
        wake_worker=worker.wake,
        endpoints_added=worker.endpoints_added,
    )
    return worker, registry


def build_vault(settings: Settings) -> TokenVault:
    key = settings.rpa_token_key
    return TokenVault.from_settings(
        decode_key(key.get_secret_value()) if key is not None else None, settings.rpa_data_dir
    )


async def open_store(settings: Settings, holder: str = "") -> tuple[Store, str]:
    """The store the settings choose, and where it is (for the start-up log).  Raises
    CannotStart, saying what to check, when it cannot be opened."""
    seeds = settings.redis_seeds
    if seeds:
        from rpa_gateway.store.redis import RedisStore

        password = settings.redis_password
        try:
            redis = await RedisStore.connect(
                addr=None if settings.redis_cluster_addr else seeds[0],
                cluster_seeds=seeds if settings.redis_cluster_addr else None,
                password=password.get_secret_value() if password is not None else None,
                retention_seconds=settings.rpa_retention_seconds,
                holder=holder,
            )
        except StoreError as exc:
            where = ", ".join(seeds)
            raise CannotStart(
                f"{str(exc).rstrip('.')}; check that Redis runs at {where} (REDIS_ADDR or"
                " REDIS_CLUSTER_ADDR) and REDIS_PASSWORD"
            ) from None
        await _agree_on_token_key(redis, settings)
        kind = "Redis Cluster" if settings.redis_cluster_addr else "Redis"
        return redis, f"{kind} at {', '.join(seeds)}"
    max_mb = settings.rpa_store_max_mb
    path = settings.rpa_data_dir / DATABASE_FILE
    try:
        sqlite = SqliteStore(
            path, max_bytes=int(max_mb * 1024 * 1024) if max_mb is not None else None
        )
    except (StoreError, OSError, sqlite3.Error) as exc:
        raise CannotStart(
            f"the store {path} cannot be opened ({exc}); check that RPA_DATA_DIR is a"
            " writable folder that no other rpa-gateway process uses"
        ) from None
    return sqlite, str(path)


async def _agree_on_token_key(redis: RedisStore, settings: Settings) -> None:
    """Every replica seals callers' tokens with the same RPA_TOKEN_KEY, or each fails to
    open half the others' (404s, takeovers that cannot poll): the first replica records
    the key's fingerprint, and one with another key refuses to start."""
    assert settings.rpa_token_key is not None  # required with Redis (config)
    ours = key_fingerprint(decode_key(settings.rpa_token_key.get_secret_value()))
    try:
        agreed = await redis.adopt_key_fingerprint(ours)
    except StoreError as exc:
        await redis.close()
        raise CannotStart(f"{exc}; check Redis") from None
    if agreed != ours:
        await redis.close()
        raise CannotStart(
            f"RPA_TOKEN_KEY is not the key the other replicas use (Redis records key"
            f" {agreed}, this one is {ours}); give every replica the same RPA_TOKEN_KEY"
        )


SHUTDOWN_STEP_SECONDS = 5.0


async def _bounded(step: str, done: Awaitable[object]) -> None:
    """One shutdown step, given at most :data:`SHUTDOWN_STEP_SECONDS`: a step that hangs
    is named in the log (with what else is still running) and the shutdown goes on."""
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await done
    except TimeoutError:
        current = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        log.error(
            "shutdown: %s took over %g s; going on without it. Still running: %s",
            step,
            SHUTDOWN_STEP_SECONDS,
            "; ".join(f"{t.get_name()} at {_where(t)}" for t in others[:10]) or "nothing",
        )


def _where(task: asyncio.Task[Any]) -> str:
    stack = task.get_stack(limit=1)
    if not stack:
        return "?"
    code = stack[-1].f_code
    return f"{code.co_filename.rsplit('/', 2)[-1]}:{stack[-1].f_lineno} ({code.co_name})"


def create_app(settings: Settings) -> FastAPI:
    lifecycle = Lifecycle()
    telemetry = Telemetry(settings, open_streams=lambda: lifecycle.open_streams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder = new_holder_id()  # names this process in leases, and fences its writes
        store, where = await open_store(settings, holder)
        lifecycle.attach(store)
        telemetry.attach(store, settings.backend)
        vault = build_vault(settings)
        backend = build_backend(settings, telemetry.calls)
        policy = poll_policy(settings)
        schedules = DurationModels(
            store,
            SchedulePolicy(
                policy.today(),
                settings.rpa_poll_target_latency,
                policy.ceiling,
                learn=settings.rpa_poll_learn,
            ),
        )
        supervisor = Supervisor(store, backend, policy, schedules)
        stewardship = Stewardship(
            store,
            supervisor,
            holder=holder,
            lease_seconds=settings.rpa_lease_seconds,
            runs_here=backend.runs_here,
        )
        service = ExecutionService(
            store,
            supervisor,
            vault,
            backend,
            timeout=settings.xiaowu_rpa_timeout,
            stewardship=stewardship,
            max_unfinished_per_caller=settings.rpa_max_unfinished_per_token,
            cancel_wait=settings.rpa_cancel_confirm_seconds + 2,
            max_stored_bytes_per_caller=(
                round(settings.rpa_max_stored_mb_per_token * 1024 * 1024)
                if settings.rpa_max_stored_mb_per_token is not None
                else None
            ),
        )
        pings = PingSweep(
            settings.xiaowu_rpa_ping_interval,
            stall_seconds=settings.rpa_stream_stall_seconds,
            on_stalled=lambda: telemetry.slow_client("stalled"),
        )
        deliveries, webhooks = build_webhooks(settings, store, vault, holder, telemetry)
        app.state.components = Components(
            settings, store, service, lifecycle, telemetry, pings, backend, webhooks
        )
        app.state.mcp = build_door(
            settings, store, service, backend, vault, lifecycle, telemetry, pings
        )
        log.info("backend %s serves: %s; store %s", backend.name, backend.describe(), where)
        if settings.backend == "local":
            warn_without_projects(settings.rpa_projects_dir, backend)
        # With Redis, the stewardship takes them over in batches, renewing in between.
        resumed, waiting = (0, 0) if settings.redis_seeds else await service.resume_unfinished()
        if resumed or waiting:
            log.info(
                "resumed %d unfinished executions; %d wait for their owner's token",
                resumed,
                waiting,
            )
        deliveries.start()
        background = [
            asyncio.create_task(
                run_housekeeping(
                    store,
                    service,
                    retention=settings.rpa_retention_seconds,
                    interval=settings.rpa_retention_sweep_seconds,
                )
            )
        ]
        if not backend.pushes:
            background.append(asyncio.create_task(schedules.run(), name="run-durations"))
        if settings.redis_seeds:  # other replicas: renew leases, take over lapsed ones
            background.append(
                asyncio.create_task(stewardship.tend(service.take_over, service.recover_lost_store))
            )
            lifecycle.on_drain(stewardship.hand_over)
        keys_file = KeysFile.of(settings)
        if keys_file is not None:
            background.append(asyncio.create_task(keys_file.watch(), name="keys-file"))
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keys_file.reload, "SIGHUP")
        try:
            yield
        finally:
            if keys_file is not None:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            lifecycle.release_streams()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # a loop that died has logged why; shut down all the same
            driven = supervisor.driven()
            await _bounded("stopping the supervisor", supervisor.stop())
            await _bounded("stopping webhook deliveries", deliveries.stop())
            with contextlib.suppress(Exception):  # sync logs store faults; nothing stops shutdown
                await _bounded("keeping what was learned", schedules.sync())
            with contextlib.suppress(StoreError):
                await _bounded("releasing leases", stewardship.release(driven))
                await _bounded("retiring", stewardship.retire())
            await _bounded("closing the backend", backend.aclose())
            await telemetry.shutdown()  # bounded by itself (it says when it gave up)
            await _bounded("closing the store", store.close())

    app = FastAPI(
        title="rpa-gateway",
        version=__version__,
        description="Runs RPA robots for AI agent workflows and streams their outcome as "
        "Server-Sent Events. `/rpa/v1/exec` keeps the reference wire format; "
        "`/rpa/v1/executions` is the native API. Every call needs `Authorization: Bearer "
        "<token>`; an execution is visible only to the token that created it.",
        lifespan=lifespan,
        # Our own telemetry observes executions; FastAPI's must neither run per request nor
        # configure global providers from OTEL_* variables behind our back.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.lifecycle = lifecycle
    app.include_router(compat.router)
    app.include_router(executions.router)
    app.include_router(feed.router)
    app.include_router(monitor.router)
    app.include_router(projects.router)
    app.include_router(health.router)
    app.include_router(diagnose.router)
    app.include_router(webhooks_api.router)
    app.include_router(metrics.router)
    # The MCP door: ASGI endpoints of their own (JSON-RPC, not REST), every method.
    app.router.routes.append(Route("/mcp", McpEndpoint()))
    app.router.routes.append(Route("/mcp/sse", SseStreamEndpoint()))
    app.router.routes.append(Route("/mcp/messages", SseMessagesEndpoint()))
    install_error_handlers(app)
    return app
