"""JSON-RPC 2.0 messages as the MCP transports receive and answer them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from rpa_gateway import json_rules
from rpa_gateway.mcp.protocol import BATCH_VERSIONS, INVALID_REQUEST, PARSE_ERROR

RequestId = str | int


class RpcError(Exception):
    """A JSON-RPC error to answer with (``id`` ``None`` when the request's is unknown)."""

    def __init__(
        self, code: int, message: str, data: Any = None, *, request_id: RequestId | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id

    def response(self) -> dict[str, Any]:
        return error_response(self.request_id, self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Response:
    """A client's answer to a server request (this server sends none: it is ignored)."""

    id: RequestId | None


Message = Request | Notification | Response


def decode(body: bytes) -> Any:
    """The body as JSON.  Raises RpcError -32700."""
    if not body.strip():
        raise RpcError(PARSE_ERROR, "Parse error: the body is empty")
    try:
        return json_rules.decode(body)
    except json_rules.JsonRefused as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from None


def message(value: Any) -> Message:
    """One JSON-RPC message.  Raises RpcError -32600 (with the id when it has a usable one)."""
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: a message is a JSON object")
    raw_id = value.get("id")
    request_id = raw_id if is_id(raw_id) else None
    if value.get("jsonrpc") != "2.0":
        raise RpcError(
            INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', request_id=request_id
        )
    params = value.get("params")
    if "method" in value:
        method = value["method"]
        if not isinstance(method, str) or not method:
            raise RpcError(
                INVALID_REQUEST, "Invalid Request: method must be a string", request_id=request_id
            )
        if params is not None and not isinstance(params, dict):
            raise RpcError(
                INVALID_REQUEST,
                "Invalid Request: params must be an object",
                request_id=request_id,
            )
        if "id" not in value:
            return Notification(method, params)
        if request_id is None:
            raise RpcError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
        return Request(request_id, method, params)
    if "result" in value or "error" in value:
        return Response(request_id)
    raise RpcError(INVALID_REQUEST, "Invalid Request: no method", request_id=request_id)


def batch(values: list[Any], version: str) -> list[Message | RpcError]:
    """A batch's messages, each one or what is wrong with it.  Raises RpcError -32600 for
    an empty batch or one at a version without batches."""
    if version not in BATCH_VERSIONS:
        raise RpcError(INVALID_REQUEST, f"Invalid Request: no batches at protocol {version}")
    if not values:
        raise RpcError(INVALID_REQUEST, "Invalid Request: empty batch")
    found: list[Message | RpcError] = []
    for value in values:
        try:
            found.append(message(value))
        except RpcError as error:
            found.append(error)
    return found


def result_response(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(
    request_id: RequestId | None, code: int, message: str, data: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def is_id(value: Any) -> TypeGuard[RequestId]:
    """A usable request id: a string or an integer (not a boolean)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
