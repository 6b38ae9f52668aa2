"""JSON error replies: a status code and a body saying what is wrong."""

from __future__ import annotations

from starlette.responses import JSONResponse


class RequestRejected(Exception):
    def __init__(
        self, status_code: int, error: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.fields = fields or []

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        headers = {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else None
        return JSONResponse(body, status_code=self.status_code, headers=headers)
