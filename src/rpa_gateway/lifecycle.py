"""Shutdown in two steps: drain (streams told to reconnect), then stop."""

from __future__ import annotations

import logging

from rpa_gateway.store.base import Store

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self._store: Store | None = None

    def attach(self, store: Store) -> None:
        self._store = store

    def begin_drain(self) -> None:
        """Refuse new executions and tell open streams to reconnect; executions go on."""
        if self.draining:
            return
        self.draining = True
        log.info("shutting down: open streams are told to reconnect")
        if self._store is not None:
            self._store.drain()
