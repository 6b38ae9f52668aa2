"""JSON error replies: a status code and a body saying what is wrong."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rpa_gateway.backends.base import InvalidRequest
from rpa_gateway.service import AlreadyFinished, ExecutionNotFound, IdempotencyConflict
from rpa_gateway.store.base import StoreError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What went wrong with a request."""

    error: str = Field(description="machine-readable kind, e.g. `invalid_body`, `not_found`")
    message: str = Field(description="what is wrong, for a person")
    fields: list[str] | None = Field(default=None, description="the request fields at fault")


class RequestRejected(Exception):
    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        fields: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.fields = fields or []
        self.headers = headers

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        headers = dict(self.headers or {})
        if self.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(body, status_code=self.status_code, headers=headers or None)


def draining() -> RequestRejected:
    return RequestRejected(
        503,
        "shutting_down",
        "the service is restarting; retry shortly",
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRejected)
        return exc.response()

    async def not_found(request: Request, exc: Exception) -> Response:
        return RequestRejected(404, "not_found", f"no execution {exc}").response()

    async def finished(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AlreadyFinished)
        status = exc.execution.status.value
        return RequestRejected(
            409, "already_finished", f"execution {exc.execution.id} already ended ({status})"
        ).response()

    async def conflict(request: Request, exc: Exception) -> Response:
        return RequestRejected(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {exc} was used with a different request",
        ).response()

    async def store_down(request: Request, exc: Exception) -> Response:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return RequestRejected(
            503, "store_unavailable", "the execution store is unavailable; retry later"
        ).response()

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidRequest)
        return RequestRejected(422, "invalid_request", exc.message, [exc.field]).response()

    app.add_exception_handler(RequestRejected, rejected)
    app.add_exception_handler(InvalidRequest, invalid)
    app.add_exception_handler(ExecutionNotFound, not_found)
    app.add_exception_handler(AlreadyFinished, finished)
    app.add_exception_handler(IdempotencyConflict, conflict)
    app.add_exception_handler(StoreError, store_down)
    app.add_exception_handler(Exception, internal)
