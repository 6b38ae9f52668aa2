"""What a refused request is told: a status code and a body saying what is wrong."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field


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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.fields = fields or []
        self.headers = dict(headers or {})
        if status_code == 401:
            self.headers["WWW-Authenticate"] = "Bearer"

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


def draining() -> RequestRejected:
    return RequestRejected(
        503,
        "shutting_down",
        "the service is restarting; retry shortly",
        headers={"Retry-After": "1"},
    )
