"""Durable executions and their event logs."""

from rpa_gateway.store.base import Store, StoreError, Subscription

__all__ = ["Store", "StoreError", "Subscription"]
