"""The outermost layer of the app, what uvicorn serves: paths normalised, and a last resort.

- Repeated and trailing slashes are dropped: astron-agent's node requests
  ``f"{RPA_BASE_URL}/rpa/v1/exec"``, so a base URL ending in ``/`` asks for
  ``//rpa/v1/exec``, and a redirect would be read as an empty success by a
  client that does not follow it.
- On a path ending in ``/rpa/v1/exec``, an exception that escapes everything
  else (even the error handlers) before the response has started still gets a
  ``data:`` frame with a non-zero code: without one, the node reads success.
- An event stream the app handed off (``event_stream``) is served here, after the
  app's call chain has returned, without the request's headers.
- A start-up failure the user can fix (:class:`CannotStart`) reaches uvicorn as its
  one-line message, not as a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rpa_gateway import sse
from rpa_gateway.api.refusals import COMPAT_PATH
from rpa_gateway.codes import Code, unknown_error_message
from rpa_gateway.connection import SCOPE_KEY, Connection
from rpa_gateway.startup import CannotStart

log = logging.getLogger(__name__)

_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")

_LAST_RESORT_FRAME = sse.frame(
    data=json.dumps(
        {
            "code": Code.UNKNOWN.value,
            "message": unknown_error_message("internal error"),
            "sid": "",
            "data": None,
            "error": "internal",
        },
        separators=(",", ":"),
    )
)
_LAST_RESORT_HEADERS = [
    (b"content-type", f"{sse.MEDIA_TYPE}; charset=utf-8".encode()),
    (b"content-length", str(len(_LAST_RESORT_FRAME)).encode()),
    *((name.lower().encode(), value.encode()) for name, value in sse.HEADERS.items()),
]


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _plain_startup_failure(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = normalised(scope)
        path: str = scope["path"]
        # The app gets a copy: what the framework hangs on its scope (routes, exit stacks,
        # state) is let go when it returns, not kept for a stream's whole life.
        if not path.endswith(COMPAT_PATH):
            await self.app(dict(scope), receive, send)
        else:
            await self._compat(scope, receive, send)
        connection = scope.get(SCOPE_KEY)
        if isinstance(connection, Connection) and connection.handed_off is not None:
            stream, connection.handed_off = connection.handed_off, None
            # The app has read the request: its headers (a copy of the caller's token among
            # them) are not kept for the stream's whole life.  Shared with the server's scope.
            headers = scope.get("headers")
            if isinstance(headers, list):
                headers.clear()
            await stream.serve(send, connection)

    async def _compat(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(dict(scope), receive, send)
        except Exception as exc:
            connection = scope.get(SCOPE_KEY)
            if isinstance(connection, Connection):
                connection.handed_off = None  # this is the response now
            try:  # refused by the server if the response has started: nothing more to say
                await send(
                    {"type": "http.response.start", "status": 500, "headers": _LAST_RESORT_HEADERS}
                )
            except Exception:
                raise exc from None
            log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
            await send({"type": "http.response.body", "body": _LAST_RESORT_FRAME})


def _plain_startup_failure(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            # Sent while the lifespan handles the exception: it is the one being handled.
            failure = sys.exc_info()[1]
            if isinstance(failure, CannotStart):
                message = {**message, "message": f"cannot start: {failure}"}
        await send(message)

    return sending


# In the scope when the path as sent ended in "/" (a URL the client will resolve against).
TRAILING_SLASH = "rpa.trailing_slash"


def normalised(scope: Scope) -> Scope:
    """The scope with repeated and trailing slashes dropped from its path (itself when none)."""
    path: str = scope["path"]
    if "//" not in path and not (path.endswith("/") and path != "/"):
        return scope
    scope = dict(scope)
    scope[TRAILING_SLASH] = path.endswith("/") and path != "/"
    scope["path"] = _SLASHES.sub("/", scope["path"]).rstrip("/") or "/"
    raw_path = scope.get("raw_path")  # the path as sent, without the query string
    if raw_path is not None:
        scope["raw_path"] = _RAW_SLASHES.sub(b"/", raw_path).rstrip(b"/") or b"/"
    return scope
