"""The native API: executions as resources, isolation by token, idempotency, cancel."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import ON_BOTH_STORES
from tests.fakes.rpa_upstream import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.native_client import auth, create, events, get
from tests.sse_client import exec_stream

pytestmark = ON_BOTH_STORES


def project(fake: FakeUpstream, polls: int = 0) -> str:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(
        pid,
        steps=[{"status": "PENDING"}] * polls
        + [{"status": "COMPLETED", "result": {"data": {"done": True}}}],
    )
    return pid


def finished(gateway: GatewayProcess, execution_id: str, token: str = "t-secret") -> dict:
    _, frames, _ = events(gateway.base_url, execution_id, token)
    assert frames[-1]["event"] == "terminal"
    response = get(gateway.base_url, execution_id, token)
    assert response.status_code == 200
    return response.json()


def test_create_then_get_shows_the_whole_execution(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = project(fake, polls=2)
    response = create(gateway.base_url, {"project_id": pid, "sid": "s1", "params": {"a": 1}})
    assert response.status_code == 202
    view = response.json()
    assert response.headers["location"] == f"/rpa/v1/executions/{view['id']}"
    assert view["status"] in ("ACCEPTED", "PENDING")
    assert view["result"] is None and view["finished_at"] is None

    done = finished(gateway, view["id"])
    assert done["status"] == "SUCCEEDED"
    assert done["result"] == {"code": 0, "message": "Success", "data": {"done": True}}
    assert done["project_id"] == pid and done["sid"] == "s1" and done["params"] == {"a": 1}
    assert done["attempts"] == {"polls": 3, "retries": 0}
    assert done["upstream_id"] == fake.runs_for(pid)[0].id
    assert done["finished_at"] >= done["created_at"]
    assert "t-secret" not in response.text + str(done)


def test_another_token_sees_nothing(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    pid = project(fake, polls=30)
    view = create(gateway.base_url, {"project_id": pid}, token="alice").json()
    url = f"{gateway.base_url}/rpa/v1/executions/{view['id']}"
    assert get(gateway.base_url, view["id"], token="mallory").status_code == 404
    assert events(gateway.base_url, view["id"], token="mallory")[0] == 404
    assert httpx.post(url + "/cancel", headers=auth("mallory")).status_code == 404
    listed = httpx.get(f"{gateway.base_url}/rpa/v1/executions", headers=auth("mallory"))
    assert view["id"] not in [item["id"] for item in listed.json()["items"]]
    assert httpx.post(url + "/cancel", headers=auth("alice")).status_code == 200


def test_list_is_newest_first_with_cursor_pages_and_filters(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    token = f"lister-{uuid.uuid4().hex[:6]}"
    pid = project(fake)
    other = project(fake)
    ids = [
        create(gateway.base_url, {"project_id": pid}, token=token).json()["id"] for _ in range(5)
    ]
    create(gateway.base_url, {"project_id": other}, token=token)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"project_id": pid, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(
            f"{gateway.base_url}/rpa/v1/executions", params=params, headers=auth(token)
        ).json()
        seen += [item["id"] for item in page["items"]]
        assert all(item["project_id"] == pid for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))

    for execution_id in ids:
        finished(gateway, execution_id, token)
    succeeded = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions",
        params={"status": "SUCCEEDED", "project_id": pid},
        headers=auth(token),
    ).json()
    assert len(succeeded["items"]) == 5
    running = httpx.get(
        f"{gateway.base_url}/rpa/v1/executions",
        params={"status": "RUNNING", "project_id": pid},
        headers=auth(token),
    )
    assert running.json()["items"] == []


def test_list_rejects_bad_parameters(gateway: GatewayProcess) -> None:
    url = f"{gateway.base_url}/rpa/v1/executions"
    assert httpx.get(url, params={"cursor": "!!"}, headers=auth("t")).status_code == 400
    assert httpx.get(url, params={"status": "DANCING"}, headers=auth("t")).status_code == 422
    assert httpx.get(url, params={"limit": "0"}, headers=auth("t")).status_code == 422
    assert httpx.get(url).status_code == 401


def test_cancel_running_execution_cancels_upstream(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = f"p-{uuid.uuid4().hex[:8]}"
    fake.script(pid, steps=[{"status": "RUNNING"}])
    stream_body = {"project_id": pid, "sid": "s"}
    first = exec_stream(gateway.base_url, stream_body, stop_after_lines=2)
    execution_id = first.ids[0].rsplit(":", 1)[0]
    url = f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel"

    response = httpx.post(url, headers=auth("t-secret"), timeout=15)
    assert response.status_code == 200
    view = response.json()
    assert view["status"] == "CANCELLED" and view["cancel_requested"] is True
    assert view["result"]["code"] == 55004
    (run,) = fake.runs_for(pid)
    assert fake.cancels.count(run.id) == 1

    again = httpx.post(url, headers=auth("t-secret"), timeout=15)
    assert again.status_code == 200 and again.json()["result"] == view["result"]
    assert fake.cancels.count(run.id) == 1, "cancelling again changes nothing"

    resumed = exec_stream(gateway.base_url, stream_body, headers={"Last-Event-ID": first.ids[-1]})
    assert resumed.terminal["code"] == 55004


def test_cancel_finished_execution_is_409(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    result = exec_stream(gateway.base_url, {"project_id": project(fake)})
    execution_id = result.ids[0].rsplit(":", 1)[0]
    response = httpx.post(
        f"{gateway.base_url}/rpa/v1/executions/{execution_id}/cancel", headers=auth("t-secret")
    )
    assert response.status_code == 409
    assert response.json()["error"] == "already_finished"
    assert "SUCCEEDED" in response.json()["message"]


def test_idempotency_key_returns_the_same_execution(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = project(fake, polls=3)
    body = {"project_id": pid, "sid": "s", "params": {"n": 1}}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = create(gateway.base_url, body, headers=key)
    second = create(gateway.base_url, body, headers=key)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"

    streamed = exec_stream(gateway.base_url, body, headers=key)
    assert streamed.ids[0].startswith(first.json()["id"] + ":")
    assert streamed.terminal["code"] == 0
    assert fake.creates_for(pid) == 1

    changed = create(gateway.base_url, {**body, "params": {"n": 2}}, headers=key)
    assert changed.status_code == 422
    assert changed.json()["error"] == "idempotency_key_reused"
    other_token = create(gateway.base_url, body, token="someone-else", headers=key)
    assert other_token.json()["id"] != first.json()["id"], "keys are per token"


def test_same_sid_without_key_never_deduplicates(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    pid = project(fake)
    a = create(gateway.base_url, {"project_id": pid, "sid": "same"}).json()
    b = create(gateway.base_url, {"project_id": pid, "sid": "same"}).json()
    assert a["id"] != b["id"]


def test_openapi_documents_the_native_api(gateway: GatewayProcess) -> None:
    spec = httpx.get(f"{gateway.base_url}/openapi.json").json()
    assert {
        "/rpa/v1/exec",
        "/rpa/v1/executions",
        "/rpa/v1/executions/{execution_id}",
        "/rpa/v1/executions/{execution_id}/events",
        "/rpa/v1/executions/{execution_id}/cancel",
    } <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"ExecutionView", "ExecutionPage", "ErrorBody", "Result", "Attempts"} <= set(schemas)
    assert schemas["ExecutionView"]["description"]
    assert httpx.get(f"{gateway.base_url}/docs").status_code == 200


def test_openapi_names_the_headers_and_parameters_callers_use(gateway: GatewayProcess) -> None:
    paths = httpx.get(f"{gateway.base_url}/openapi.json").json()["paths"]

    def parameters(path: str, method: str) -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", [])}

    assert {"Idempotency-Key", "Last-Event-ID", "last_event_id", "progress", "X-RPA-Progress"} <= (
        parameters("/rpa/v1/exec", "post")
    )
    assert "Idempotency-Key" in parameters("/rpa/v1/executions", "post")
    events = "/rpa/v1/executions/{execution_id}/events"
    assert {"Last-Event-ID", "last_event_id", "after"} <= parameters(events, "get")
    created = paths["/rpa/v1/executions"]["post"]["responses"]
    assert {"Location", "Idempotent-Replayed"} <= set(created["202"]["headers"])
    assert "Retry-After" in created["429"]["headers"] and "Retry-After" in created["503"]["headers"]
    assert "Idempotent-Replayed" in paths["/rpa/v1/exec"]["post"]["responses"]["200"]["headers"]
