"""How refused requests are answered: JSON, or one SSE frame where callers read only those.

astron-agent's RPA node ignores the HTTP status and reads only ``data:`` lines;
an answer without one is a success with empty outputs to it.  So a refusal of
``/rpa/v1/exec`` keeps its status and error fields but comes as an event
stream with exactly one ``data:`` frame with a non-zero code - unless the
caller asks for JSON only (``Accept: application/json`` without
``text/event-stream``).  Every other endpoint answers JSON.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from rpa_gateway import sse
from rpa_gateway.api import compat_wire
from rpa_gateway.api.body import body_was_read, noted_sid, read_json_object
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.backends.base import InvalidRequest, Overloaded
from rpa_gateway.service import (
    AlreadyFinished,
    CancelUnsupported,
    CursorBeyondEnd,
    ExecutionNotFound,
    IdempotencyConflict,
)
from rpa_gateway.store.base import StoreError

log = logging.getLogger(__name__)

COMPAT_PATH = "/rpa/v1/exec"
_SID_READ_TIMEOUT = 5.0  # reading a refused request's body for its sid is a courtesy


def reads_data_lines(request: Request) -> bool:
    """Whether the caller may be one that only reads ``data:`` lines of ``/rpa/v1/exec``.

    Any path ending in the compat path counts: a base URL with a wrong prefix
    must fail visibly too.
    """
    if not request.scope["path"].endswith(COMPAT_PATH):
        return False
    accepted = {
        part.split(";", 1)[0].strip().lower()
        for part in request.headers.get("accept", "").split(",")
    }
    return not ("application/json" in accepted and "text/event-stream" not in accepted)


async def answer(request: Request, rejected: RequestRejected) -> Response:
    if rejected.status_code in (408, 413):  # its body may still be arriving: do not read it
        rejected.headers["Connection"] = "close"
    if not reads_data_lines(request):
        return JSONResponse(
            rejected.body(), status_code=rejected.status_code, headers=rejected.headers or None
        )
    settings = components(request).settings
    frame = compat_wire.refusal_frame(
        rejected.status_code,
        rejected.error,
        rejected.message,
        await _sid(request, settings.rpa_max_body_bytes),
        rejected.fields,
        settings.rpa_max_frame_bytes,
    )
    return Response(
        frame,
        status_code=rejected.status_code,
        headers={**sse.HEADERS, **rejected.headers},
        media_type=sse.MEDIA_TYPE,
    )


async def _sid(request: Request, body_limit: int) -> str:
    """The request's ``sid`` when its body is (or can still be) read as a JSON object."""
    if not body_was_read(request):  # refused before the body was read: read it now
        try:
            await read_json_object(request, body_limit, seconds=_SID_READ_TIMEOUT)
        except (RequestRejected, ClientDisconnect, RuntimeError):
            return ""
    return noted_sid(request) or ""


def install_error_handlers(app: FastAPI) -> None:
    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRejected)
        return await answer(request, exc)

    async def not_found(request: Request, exc: Exception) -> Response:
        return await answer(request, RequestRejected(404, "not_found", f"no execution {exc}"))

    async def finished(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AlreadyFinished)
        status = exc.execution.status.value
        return await answer(
            request,
            RequestRejected(
                409, "already_finished", f"execution {exc.execution.id} already ended ({status})"
            ),
        )

    async def uncancellable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CancelUnsupported)
        return await answer(
            request,
            RequestRejected(
                409,
                "cancel_unsupported",
                f"the RPA platform cannot cancel execution {exc.execution.id}'s run"
                " (CANCEL_UNSUPPORTED); it goes on until it ends or its deadline ends it",
            ),
        )

    async def conflict(request: Request, exc: Exception) -> Response:
        return await answer(
            request,
            RequestRejected(
                422,
                "idempotency_key_reused",
                f"Idempotency-Key {exc} was used with a different request",
                ["Idempotency-Key"],
            ),
        )

    async def store_down(request: Request, exc: Exception) -> Response:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return await answer(
            request,
            RequestRejected(
                503,
                "store_unavailable",
                "the execution store is unavailable; retry later",
                headers={"Retry-After": "1"},
            ),
        )

    async def beyond_end(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CursorBeyondEnd)
        last = exc.execution.last_seq
        return await answer(
            request,
            RequestRejected(
                400,
                "invalid_cursor",
                f"cannot resume after event {exc.after}: execution {exc.execution.id}"
                f" has {last} events so far (resume from {exc.execution.id}:{last} or before)",
            ),
        )

    async def overloaded(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Overloaded)
        return await answer(
            request,
            RequestRejected(
                429, "too_many", exc.message, headers={"Retry-After": str(exc.retry_after)}
            ),
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidRequest)
        return await answer(
            request, RequestRejected(422, "invalid_request", exc.message, [exc.field])
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await answer(request, _http_refusal(request, exc))

    async def invalid_parameters(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await answer(request, _validation_refusal(exc))

    async def client_gone(request: Request, exc: Exception) -> Response:
        # Nobody is left to answer; nothing was created (the body was never whole).
        log.info(
            "the client disconnected before its request body arrived whole: %s %s",
            request.method,
            request.url.path,
        )
        return Response(status_code=400)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return await answer(request, RequestRejected(500, "internal", "internal error"))

    app.add_exception_handler(RequestRejected, rejected)
    app.add_exception_handler(InvalidRequest, invalid)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(ExecutionNotFound, not_found)
    app.add_exception_handler(AlreadyFinished, finished)
    app.add_exception_handler(CancelUnsupported, uncancellable)
    app.add_exception_handler(CursorBeyondEnd, beyond_end)
    app.add_exception_handler(IdempotencyConflict, conflict)
    app.add_exception_handler(StoreError, store_down)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_parameters)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, internal)


def _http_refusal(request: Request, exc: HTTPException) -> RequestRejected:
    where = f"{request.method} {request.scope['path']}"
    if exc.status_code == 404:
        hint = ""
        if request.scope["path"].endswith(COMPAT_PATH):
            hint = f"; the base URL must be the service's root (requests go to <base>{COMPAT_PATH})"
        return RequestRejected(404, "not_found", f"no endpoint {where}{hint}")
    if exc.status_code == 405:
        return RequestRejected(
            405, "method_not_allowed", f"{where} is not allowed", headers=exc.headers
        )
    return RequestRejected(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)


def _validation_refusal(exc: RequestValidationError) -> RequestRejected:
    problems, fields = [], []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        field = ".".join(location[1:] or location) or "request"
        fields.append(field)
        problems.append(f"{field}: {error.get('msg', 'invalid')}")
    return RequestRejected(422, "invalid_request", "; ".join(problems), fields)
