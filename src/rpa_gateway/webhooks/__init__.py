"""Completion webhooks: endpoints callers register, deliveries recorded with the events
they announce, a worker that signs and sends them (Standard Webhooks)."""
