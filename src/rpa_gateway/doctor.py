"""``rpa-gateway doctor``: the checklist of ``diagnosis``, run here with the settings a
``serve`` would use (environment, then config.env), for one caller's key.

A line per check, ``ok`` or ``FAIL`` with what to do; exit 0 only when every check
passed, 1 otherwise.  It starts nothing, and prints no secret.  The store is opened as
``serve`` would open it; one a running service holds is reported as in use (its own
``GET /rpa/v1/diagnose`` checks it from there).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from rpa_gateway.config import ConfigError, Settings, load_settings
from rpa_gateway.diagnosis import Check, check_backend, check_projects, check_store


def run_doctor(token: str, out: TextIO = sys.stdout) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        checks = [
            Check("settings", False, line, "correct the setting (environment or config.env)")
            for line in str(exc).splitlines()
        ]
    else:
        checks = [Check("settings", True, "valid")]
        checks += asyncio.run(_checks(settings, token))
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        fix = f" -> {check.fix}" if not check.ok and check.fix else ""
        out.write(f"{mark} {check.name}: {check.detail}{fix}\n")
    return 0 if all(c.ok for c in checks) else 1


async def _checks(settings: Settings, token: str) -> list[Check]:
    from rpa_gateway.app import DATABASE_FILE, build_backend, open_store
    from rpa_gateway.startup import CannotStart
    from rpa_gateway.store.base import StoreError
    from rpa_gateway.store.sqlite import ensure_free

    checks: list[Check] = []
    try:
        if not settings.redis_seeds:
            ensure_free(settings.rpa_data_dir / DATABASE_FILE)
        store, _ = await open_store(settings)
    except StoreError:  # held: a service serves from it
        checks.append(
            Check("store writable", True, "in use by the running service (its diagnose checks it)")
        )
    except CannotStart as exc:
        checks.append(Check("store writable", False, str(exc), "see the message"))
    else:
        try:
            checks.append(await check_store(store))
        finally:
            await store.close()
    if settings.backend == "local":  # not a LocalBackend: it would stop a service's runs
        return [*checks, check_projects(settings.rpa_projects_dir)]
    backend = build_backend(settings)
    try:
        checks += await check_backend(settings, backend, token)
    finally:
        await backend.aclose()
    return checks


__all__ = ["run_doctor"]
