"""What stands between a caller and its robots, checked one step at a time: the platform
reachable (name, connection, TLS), its create and query routes where the settings say,
the caller's key accepted, the clock, the contract and the account's RPA client.

Each check is a line: ok, or failed with what to do.  Nothing here starts a robot: the
create route is asked with a GET (a 405 says it is there, a 404 that the path is wrong),
the query route for an execution that does not exist.  No secret appears in a line.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rpa_gateway.backends.astron import AstronBackend
from rpa_gateway.backends.base import Backend
from rpa_gateway.backends.contract import ClientState, Dialect, Discovery, read_integration
from rpa_gateway.backends.projects import PROJECT_FILE, ProjectCatalog, ProjectError
from rpa_gateway.config import Settings
from rpa_gateway.json_rules import decode_reply
from rpa_gateway.store.base import Store, StoreError

CONNECT_SECONDS = 5.0
MAX_SKEW_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


async def check_store(store: Store) -> Check:
    try:
        await store.check()
    except StoreError as exc:
        return Check(
            "store writable",
            False,
            str(exc),
            "free disk space or RPA_STORE_MAX_MB room; with Redis, check it runs and has memory",
        )
    return Check("store writable", True, "the execution store answers and takes writes")


def check_projects(root: Path) -> Check:
    """Every project folder loads (its project.toml, its schemas)."""
    catalog = ProjectCatalog(root)
    folders = (
        sorted(p.name for p in root.iterdir() if (p / PROJECT_FILE).is_file())
        if root.is_dir()
        else []
    )
    broken = []
    for name in folders:
        try:
            catalog.get(name)
        except ProjectError as exc:
            broken.append(f"{name}: {exc}")
    if broken:
        return Check(
            "projects",
            False,
            "; ".join(broken),
            "correct these project.toml files (see the README's Backends section)",
        )
    if not folders:
        return Check(
            "projects",
            False,
            f"no project in {root} (RPA_PROJECTS_DIR)",
            "add project folders (each with a project.toml) to RPA_PROJECTS_DIR",
        )
    return Check("projects", True, f"{len(folders)} projects load: {', '.join(folders)}")


async def check_backend(settings: Settings, backend: Backend, token: str) -> list[Check]:
    """The backend's checks: the platform for this key, or the local projects."""
    if isinstance(backend, AstronBackend):
        return await check_platform(backend, token)
    return [check_projects(settings.rpa_projects_dir)]


async def check_platform(backend: AstronBackend, token: str) -> list[Check]:
    """The platform for this caller's key, check by check; later checks are skipped once
    one fails that they depend on."""
    create_url, query_url = backend.create_url, backend.query_url
    reached = await _reachable(create_url)
    checks = [reached]
    if not reached.ok:
        return checks
    status, _, body = await backend.answer("GET", create_url, token)
    if status == 0:  # connected, then no reply
        checks.append(
            Check(
                "platform answers",
                False,
                f"no reply from the create URL: {body.decode(errors='replace')}",
                "check the platform's health and any proxy in between",
            )
        )
        return checks
    checks.append(_create_route(status))
    probe = f"{query_url}/{uuid.uuid4()}"  # an execution that does not exist
    status, headers, body = await backend.answer("GET", probe, token)
    route, key = _query_route(status, body)
    checks.append(route)
    if key is not None:
        checks.append(key)
    checks.append(_clock(headers.get("Date")))
    if key is not None and not key.ok:
        return checks
    try:
        discovery, _ = read_integration(*await backend.fetch_integration(token))
    except OSError as exc:
        discovery = Discovery(Dialect.LEGACY, f"the discovery route cannot be reached: {exc}")
    if backend.contract_mode != "auto":  # RPA_UPSTREAM_CONTRACT chose the dialect
        used = await backend.discover(token)
        discovery = Discovery(
            used.dialect,
            f"{used.reason}, though the platform says: {discovery.reason}",
            discovery.service_version,
            discovery.client_state,
            discovery.supports_cancel,
            discovery.json_limits,
        )
    if discovery.dialect is Dialect.MANAGED:
        checks.append(Check("contract", True, f"managed contract 1 ({discovery.service_version})"))
        checks.append(_client(discovery.client_state))
    else:
        checks.append(Check("contract", True, f"legacy routes: {discovery.reason}"))
    return checks


async def _reachable(url: str) -> Check:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        await loop.getaddrinfo(host, port)
    except OSError as exc:
        return Check(
            "platform reachable",
            False,
            f"the name {host!r} does not resolve ({exc.strerror or exc})",
            "check the host in XIAOWU_RPA_TASK_CREATE_URL and this machine's DNS",
        )
    started = time.monotonic()
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            _, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if parts.scheme == "https" else None
            )
    except (OSError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror or exc
        return Check(
            "platform reachable",
            False,
            f"cannot connect to {where} ({reason})",
            "check that the RPA platform runs there and that no firewall stands between",
        )
    writer.close()
    latency = (time.monotonic() - started) * 1000
    tls = ", TLS verified" if parts.scheme == "https" else ""
    return Check("platform reachable", True, f"{where} connects in {latency:.0f} ms{tls}")


def _create_route(status: int) -> Check:
    if status in (405, 401, 422):  # the route is there (it takes POSTs)
        return Check("create route", True, "the create route answers (a GET is refused)")
    return Check(
        "create route",
        False,
        f"a GET on the create URL answered HTTP {status}, not 405: the path is wrong",
        "XIAOWU_RPA_TASK_CREATE_URL must end in /api/rpa-openapi/workflows/execute-async",
    )


def _query_route(status: int, body: bytes) -> tuple[Check, Check | None]:
    if status == 401:
        route = Check("query route", True, "the query route answers")
        key = Check(
            "key accepted",
            False,
            "the platform rejected the key (401)",
            "give the caller's RPA platform API key as its token (Authorization: Bearer ...)",
        )
        return route, key
    try:
        reply = decode_reply(body)
    except ValueError:
        reply = None
    speaks = isinstance(reply, dict) and ("code" in reply or isinstance(reply.get("detail"), dict))
    if not speaks:
        route = Check(
            "query route",
            False,
            f"the query URL answered HTTP {status} without the RPA OpenAPI's envelope:"
            " the path is wrong",
            "XIAOWU_RPA_TASK_QUERY_URL must end in /api/rpa-openapi/executions",
        )
        return route, None
    return Check("query route", True, "the query route answers"), Check(
        "key accepted", True, "the platform accepted the key"
    )


def _clock(date: str | None) -> Check:
    if not date:
        return Check("clock", True, "the platform sent no Date to compare with")
    try:
        skew = time.time() - parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", True, "the platform's Date cannot be read")
    if abs(skew) > MAX_SKEW_SECONDS:
        return Check(
            "clock",
            False,
            f"this machine's clock is {skew:+.0f} s off the platform's",
            "synchronise the clocks (NTP): run times and deadlines are compared",
        )
    return Check("clock", True, f"within {abs(skew):.0f} s of the platform's")


def _client(state: ClientState | None) -> Check:
    if state is ClientState.READY:
        return Check("RPA client", True, "the account's RPA client is ready")
    fixes = {
        ClientState.OFFLINE: "start the RPA client of this account and sign it in",
        ClientState.UNCONFIRMED: "the RPA client did not answer the platform in time: restart it",
        ClientState.UNSUPPORTED: "update the RPA client of this account to a managed build",
    }
    name = state.value if state is not None else "unknown"
    fix = fixes.get(state, "check the RPA client of this account") if state else ""
    return Check("RPA client", False, f"the account's RPA client is {name}", fix)


__all__ = ["Check", "check_backend", "check_platform", "check_projects", "check_store"]
