"""A client of ``GET /rpa/v1/feed`` read in a thread, for the tests."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import httpx

from tests.native_client import auth

WAIT = 10.0


class Feed:
    """A feed read in a thread: its ``change`` events land in a queue."""

    def __init__(self, base_url: str, token: str, last_event_id: str | None = None) -> None:
        self.changes: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.opened = threading.Event()
        self.status = 0
        headers = auth(token)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(
            target=self._read, args=(f"{base_url}/rpa/v1/feed", headers), daemon=True
        )
        self._thread.start()
        assert self.opened.wait(WAIT)

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self.opened.set()
                event_id, kind = "", ""
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "change":
                        self.changes.put((event_id, json.loads(line[6:])))
                    elif not line:
                        event_id, kind = "", ""
        except httpx.HTTPError:
            self.opened.set()

    def next(self, within: float = WAIT) -> tuple[str, dict[str, Any]]:
        return self.changes.get(timeout=within)

    def until_end_of(self, execution_id: str) -> list[tuple[str, dict[str, Any]]]:
        seen = []
        while True:
            event_id, change = self.next()
            if change["id"] == execution_id:
                seen.append((event_id, change))
                if change.get("finished_at") is not None:
                    return seen

    def close(self) -> None:
        self._client.close()
