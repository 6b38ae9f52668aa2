"""Repeated slashes in a request path are served as one.

astron-agent's node requests ``f"{RPA_BASE_URL}/rpa/v1/exec"``, so a base URL
ending in ``/`` asks for ``//rpa/v1/exec``; that must run, not answer 404.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")


class CollapseSlashes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope)
            scope["path"] = _SLASHES.sub("/", scope["path"])
            raw_path = scope.get("raw_path")
            if raw_path is not None:
                scope["raw_path"] = _RAW_SLASHES.sub(b"/", raw_path)
        await self.app(scope, receive, send)
