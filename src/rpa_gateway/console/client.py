"""A small synchronous client of a running gateway's native API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource

JsonObject = dict[str, Any]

TERMINAL = "terminal"


class GatewayError(Exception):
    """The service refused the request, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of an execution's native event stream."""

    id: str
    kind: str  # state, progress, terminal
    data: JsonObject


class GatewayClient:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise GatewayError(0, "--url must be an http:// or https:// URL")
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def list_executions(
        self, *, status: str | None = None, project_id: str | None = None, limit: int = 50
    ) -> list[JsonObject]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if project_id:
            params["project_id"] = project_id
        page: JsonObject = self._json("GET", "/rpa/v1/executions", params=params)
        items: list[JsonObject] = page["items"]
        return items

    def execution(self, execution_id: str) -> JsonObject:
        found: JsonObject = self._json("GET", f"/rpa/v1/executions/{_segment(execution_id)}")
        return found

    def cancel(self, execution_id: str) -> JsonObject:
        path = f"/rpa/v1/executions/{_segment(execution_id)}/cancel"
        cancelled: JsonObject = self._json("POST", path, timeout=30.0)
        return cancelled

    def projects(self) -> list[JsonObject]:
        found: JsonObject = self._json("GET", "/rpa/v1/projects")
        projects: list[JsonObject] = found["projects"]
        return projects

    def changes(self, since: float, *, reconnect_for: float = 60.0) -> Iterator[JsonObject]:
        """The caller's execution changes (``GET /rpa/v1/feed``) from ``since`` (epoch
        seconds; the service replays the state of those changed since) until the caller
        stops; a dropped connection resumes from the last change seen."""
        cursor = str(round(since * 1000))
        for event in self._stream("/rpa/v1/feed", cursor, reconnect_for):
            if event.kind == "change":
                yield event.data

    def events(
        self, execution_id: str, *, after: int = 0, reconnect_for: float = 60.0
    ) -> Iterator[StreamEvent]:
        """The execution's events after ``after``, to the terminal one.  A dropped
        connection is re-attached with ``Last-Event-ID`` (the service replays what was
        missed) for up to ``reconnect_for`` seconds without success."""
        path = f"/rpa/v1/executions/{_segment(execution_id)}/events"
        for event in self._stream(path, f"{execution_id}:{after}", reconnect_for):
            yield event
            if event.kind == TERMINAL:
                return

    def _stream(
        self, path: str, last_id: str | None, reconnect_for: float
    ) -> Iterator[StreamEvent]:
        """An event stream, re-attached with ``Last-Event-ID`` whenever it drops or ends."""
        retry = 1.0
        failing_since: float | None = None
        while True:
            try:
                headers = {"Accept": "text/event-stream"}
                if last_id:
                    headers["Last-Event-ID"] = last_id
                with self._http.stream(
                    "GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=None)
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        raise _refusal(response)
                    for frame in EventSource(response).iter_sse():
                        failing_since = None
                        if frame.retry is not None:
                            retry = frame.retry / 1000
                        if not frame.data:
                            continue
                        event = StreamEvent(frame.id, frame.event, _loads(frame.data))
                        if event.id:
                            last_id = event.id
                        yield event
            except httpx.TransportError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise GatewayError(0, f"the service cannot be reached: {exc}") from None
            time.sleep(retry)  # ended early (the service restarts) or dropped: re-attach

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route's JSON answer (None for 204); refusals raise GatewayError."""
        return self._json(method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayError(0, f"the service cannot be reached: {exc}") from None
        if response.status_code >= 400:
            raise _refusal(response)
        return response.json() if response.status_code != 204 else None


def _segment(text: str) -> str:
    return quote(text, safe="")


def _refusal(response: httpx.Response) -> GatewayError:
    message = response.text.strip()
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("detail") or message)
    except ValueError:
        pass
    return GatewayError(response.status_code, f"{response.status_code}: {message}")


def _loads(text: str) -> JsonObject:
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return {"raw": text}
    return data if isinstance(data, dict) else {"value": data}
