"""``rpa-gateway webhooks ls / add / rm / test / deliveries / retry`` against a running
service (its ``/rpa/v1/webhooks`` routes).  Same output rules as the other client
commands: tables on a terminal, tab-separated lines piped, ``--json`` for scripts."""

from __future__ import annotations

from urllib.parse import quote

from rpa_gateway.console.client import GatewayClient, JsonObject
from rpa_gateway.console.commands import EXIT_OK, Output

_ROUTE = "/rpa/v1/webhooks"


def _path(*parts: str) -> str:
    return "/".join([_ROUTE, *(quote(p, safe="") for p in parts)])


def endpoints(client: GatewayClient, output: Output) -> int:
    found: JsonObject = client.request_json("GET", _ROUTE)
    items: list[JsonObject] = found["items"]
    if output.as_json:
        output.json(items)
        return EXIT_OK
    rows = [
        [
            e["id"],
            "enabled" if e["enabled"] else f"disabled: {e.get('disabled_reason') or 'by hand'}",
            "failing since " + e["failing_since"] if e.get("failing_since") else "ok",
            e["url"],
            ",".join(e["events"]),
            e.get("project_id") or "*",
        ]
        for e in items
    ]
    output.table(("ID", "STATE", "HEALTH", "URL", "EVENTS", "PROJECT"), rows)
    return EXIT_OK


def add(
    client: GatewayClient,
    output: Output,
    url: str,
    events: list[str] | None,
    project_id: str | None,
    description: str,
) -> int:
    body: JsonObject = {"url": url, "description": description}
    if events:
        body["events"] = events
    if project_id:
        body["project_id"] = project_id
    made: JsonObject = client.request_json("POST", _ROUTE, json=body)
    if output.as_json:
        output.json(made)
    else:
        output.line(f"{made['id']}: {made['url']}")
        output.line(f"secret (shown this once; it signs every delivery): {made['secret']}")
    return EXIT_OK


def remove(client: GatewayClient, output: Output, webhook_id: str) -> int:
    client.request_json("DELETE", _path(webhook_id))
    if output.as_json:
        output.json({"id": webhook_id, "removed": True})
    else:
        output.line(f"{webhook_id}: removed")
    return EXIT_OK


def test(client: GatewayClient, output: Output, webhook_id: str) -> int:
    delivery: JsonObject = client.request_json("POST", _path(webhook_id, "test"))
    if output.as_json:
        output.json(delivery)
    else:
        output.line(f"{delivery['id']}: webhook.test {delivery['status']}")
    return EXIT_OK


def deliveries(
    client: GatewayClient, output: Output, webhook_id: str, status: str | None, limit: int
) -> int:
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status
    page: JsonObject = client.request_json("GET", _path(webhook_id, "deliveries"), params=params)
    items: list[JsonObject] = page["items"]
    if output.as_json:
        output.json(items)
        return EXIT_OK
    rows = [
        [
            d["id"],
            d["event_type"],
            d.get("execution_id") or "-",
            d["status"],
            str(d["attempts"]),
            "-" if d.get("last_status") is None else str(d["last_status"]),
            d.get("last_error") or "",
            d.get("next_attempt_at") or "",
        ]
        for d in items
    ]
    columns = ("DELIVERY", "EVENT", "EXECUTION", "STATUS", "ATTEMPTS", "HTTP", "ERROR", "NEXT")
    output.table(columns, rows)
    return EXIT_OK


def retry(client: GatewayClient, output: Output, webhook_id: str, delivery_id: str) -> int:
    delivery: JsonObject = client.request_json(
        "POST", _path(webhook_id, "deliveries", delivery_id, "retry")
    )
    if output.as_json:
        output.json(delivery)
    else:
        output.line(f"{delivery['id']}: sent again")
    return EXIT_OK
