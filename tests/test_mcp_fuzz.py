"""Property-based fuzzing of ``POST /mcp`` (hypothesis) against one real gateway process.

Arbitrary JSON; JSON-RPC requests of both protocol generations, well formed (real methods,
tools, arguments, sessions and executions) and then broken in one or two places (odd ids,
junk methods and params, wrong or missing ``_meta`` and routing headers, batches); and raw
bytes.  Whatever comes in, the answer is never a 5xx nor an internal error (-32603): it is
a 202 with an empty body, a JSON-RPC response (or a batch's array of them) with a code the
protocol defines, or an event stream of notifications ending in one.  hypothesis prints
the failing example.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp.shared.inbound import encode_header_value

from rpa_gateway.mcp.protocol import HANDSHAKE_VERSIONS, SUPPORTED_VERSIONS
from tests.gateway_process import GatewayProcess
from tests.mcp_support import LATEST_HANDSHAKE, MODERN, local_env, make_projects

# Codes a client may see from this endpoint; -32603 (internal error) is never one of them.
EXPECTED_CODES = frozenset({-32700, -32600, -32601, -32602, -32020, -32021, -32022, -32800})
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"

REQUEST_METHODS = [
    "initialize",
    "ping",
    "tools/list",
    *["tools/call"] * 12,  # the one that runs robots: most of the traffic
    "server/discover",
    "tasks/get",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "logging/setLevel",
    "completion/complete",
    "subscriptions/listen",
]
NOTIFICATION_METHODS = [
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
]
TOOLS = ["rpa_run", "rpa_get", "rpa_wait", "rpa_cancel", "rpa_list", "rpa_logs"]
PROJECTS = ["greet", "sleeper", "failing", "bad_output"]
JUNK_VERSIONS = ["1999-01-01", "2030-01-01", "latest", "2025-11-25,2026-07-28", "2024-11-5", "x"]
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def header_text(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """A value an HTTP header can carry (no edge whitespace)."""
    return (
        st.text(ASCII, min_size=min_size, max_size=max_size)
        .map(str.strip)
        .filter(lambda value: len(value) >= min_size)
    )


# --- JSON ----------------------------------------------------------------------------------------
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
junk = json_values
# Request ids of every JSON type: MCP allows only strings and integers (never null or bool).
odd_ids = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.just({}),
)
good_ids = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=12))
small_seconds = st.floats(min_value=0, max_value=1, allow_nan=False)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


# --- well-formed requests ------------------------------------------------------------------------
@dataclass
class Known:
    """What the fuzzing gateway has already: sessions and executions to name."""

    sessions: dict[str, str] = field(default_factory=dict)  # "live"/"ended" -> id
    executions: list[str] = field(default_factory=list)


def project_params(project: str) -> st.SearchStrategy[dict[str, Any]]:
    # Runs are real processes: seconds stay small so none outlives its test by much.
    return {
        "greet": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=12)}),
        "sleeper": optional(seconds=small_seconds),
    }.get(project, st.just({}))


@st.composite
def tool_call(draw: st.DrawFn, known: Known) -> dict[str, Any]:
    execution_id = st.one_of(st.sampled_from(known.executions), st.text(min_size=1, max_size=40))
    wait = st.floats(min_value=0, max_value=2)
    name = draw(st.sampled_from([*TOOLS, *PROJECTS]))
    if name in PROJECTS:
        arguments = draw(project_params(name))
    elif name == "rpa_run":
        project = draw(st.sampled_from([*PROJECTS, "nope", "../greet"]))
        arguments = {"project_id": project}
        arguments |= draw(
            optional(
                params=project_params(project),
                wait_seconds=wait,
                idempotency_key=st.text(min_size=1, max_size=10),
                version=st.integers(0, 5),
            )
        )
    elif name == "rpa_list":
        arguments = draw(
            optional(
                status=st.sampled_from(["pending", "running", "succeeded", "failed"]),
                project_id=st.sampled_from(PROJECTS),
                limit=st.integers(1, 200),
                cursor=st.text(max_size=30),
            )
        )
    else:
        arguments = {"execution_id": draw(execution_id)}
        if name == "rpa_wait":
            arguments |= draw(optional(wait_seconds=wait))
        if name == "rpa_logs":
            arguments |= draw(optional(tail=st.integers(1, 200)))
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if draw(st.sampled_from([False, False, False, True])):
        params["task"] = draw(optional(ttl=st.integers(0, 10**6)))
    return params


@st.composite
def method_params(draw: st.DrawFn, method: str, known: Known) -> dict[str, Any]:
    if method == "tools/call":
        return draw(tool_call(known))
    if method == "initialize":
        return {
            "protocolVersion": draw(st.sampled_from([*SUPPORTED_VERSIONS, "2030-01-01"])),
            "capabilities": draw(st.sampled_from([{}, {"roots": {}}])),
            "clientInfo": {"name": "fuzz", "version": "1"},
        }
    if method.startswith("tasks/") and method != "tasks/list":
        task = st.one_of(st.sampled_from(known.executions), st.text(max_size=20))
        return {"taskId": draw(task)}
    if method == "notifications/cancelled":
        return {"requestId": draw(good_ids)}
    if method == "notifications/progress":
        return {"progressToken": draw(good_ids), "progress": draw(st.floats(0, 100))}
    if method == "logging/setLevel":
        return {"level": draw(st.sampled_from(["debug", "info", "error", "loud"]))}
    if method in ("resources/read", "resources/subscribe"):
        return {"uri": draw(st.text(max_size=20))}
    if method == "prompts/get":
        return {"name": draw(st.text(max_size=10))}
    return {}


@dataclass
class Post:
    """One POST: its body and headers (a list: a header may come twice)."""

    body: Any
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set_header(self, name: str, value: str | None) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            self.headers.append((name, value))


@st.composite
def well_formed(draw: st.DrawFn, known: Known) -> Post:
    """A request a conforming client could send, at a protocol version of its choosing."""
    modern = draw(st.booleans())
    notification = draw(st.sampled_from([False, False, False, False, True]))
    method = draw(st.sampled_from(NOTIFICATION_METHODS if notification else REQUEST_METHODS))
    params = draw(method_params(method, known))
    headers = [
        ("Authorization", "Bearer fuzz"),
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
    ]
    if modern:
        capabilities: dict[str, Any] = draw(
            st.sampled_from([{}, {"extensions": {TASKS_EXTENSION: {}}}])
        )
        params["_meta"] = {
            PROTOCOL_VERSION: MODERN,
            CLIENT_CAPABILITIES: capabilities,
            CLIENT_INFO: {"name": "fuzz", "version": "1"},
        }
        headers += [("MCP-Protocol-Version", MODERN), ("Mcp-Method", method)]
        named = params.get("name", params.get("taskId"))
        if isinstance(named, str):
            headers.append(("Mcp-Name", encode_header_value(named)))
    else:
        version = draw(st.sampled_from([None, *HANDSHAKE_VERSIONS]))
        if version is not None:
            headers.append(("MCP-Protocol-Version", version))
        if version == LATEST_HANDSHAKE and draw(st.booleans()):
            headers.append(("Mcp-Session-Id", known.sessions["live"]))
    if draw(st.sampled_from([False, False, True])):
        meta = params.setdefault("_meta", {})
        meta["progressToken"] = draw(good_ids)
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if not notification:
        body["id"] = draw(good_ids)
    return Post(body, headers)


# --- ways to break one ---------------------------------------------------------------------------
Mutation = Callable[[st.DrawFn, Post, Known], None]


def _message(post: Post) -> dict[str, Any]:
    return post.body if isinstance(post.body, dict) else {}


def _params(post: Post) -> dict[str, Any]:
    params = _message(post).get("params")
    return params if isinstance(params, dict) else {}


def jsonrpc_version(draw: st.DrawFn, post: Post, known: Known) -> None:
    value = draw(st.one_of(st.just("1.0"), st.just(2.0), junk))
    if draw(st.booleans()):
        _message(post).pop("jsonrpc", None)
    else:
        _message(post)["jsonrpc"] = value


def request_id(draw: st.DrawFn, post: Post, known: Known) -> None:
    _message(post)["id"] = draw(odd_ids)


def no_id(draw: st.DrawFn, post: Post, known: Known) -> None:
    _message(post).pop("id", None)


def method(draw: st.DrawFn, post: Post, known: Known) -> None:
    if draw(st.booleans()):
        _message(post).pop("method", None)
    else:
        _message(post)["method"] = draw(st.one_of(st.text(max_size=12), junk))


def params(draw: st.DrawFn, post: Post, known: Known) -> None:
    if draw(st.booleans()):
        _message(post)["params"] = draw(junk)
    else:
        _params(post).update(draw(json_objects))


def arguments(draw: st.DrawFn, post: Post, known: Known) -> None:
    found = _params(post)
    choice = draw(st.sampled_from(["junk", "merge", "name", "drop"]))
    if choice == "junk":
        found["arguments"] = draw(junk)
    elif choice == "merge" and isinstance(found.get("arguments"), dict):
        found["arguments"].update(draw(json_objects))
    elif choice == "name":
        found["name"] = draw(st.one_of(st.text(max_size=10), junk))
    else:
        found.pop(draw(st.sampled_from(["arguments", "name", "taskId"])), None)


def meta(draw: st.DrawFn, post: Post, known: Known) -> None:
    found = _params(post)
    current = found.get("_meta")
    choice = draw(st.sampled_from(["junk", "drop", "key", "version", "capabilities"]))
    if choice == "junk" or not isinstance(current, dict):
        found["_meta"] = draw(junk)
    elif choice == "drop":
        found.pop("_meta")
    elif choice == "key":
        current.pop(draw(st.sampled_from([PROTOCOL_VERSION, CLIENT_CAPABILITIES, CLIENT_INFO])), 0)
    elif choice == "version":
        current[PROTOCOL_VERSION] = draw(
            st.one_of(st.sampled_from([*SUPPORTED_VERSIONS, *JUNK_VERSIONS]), junk)
        )
    else:
        current[CLIENT_CAPABILITIES] = draw(junk)


def version_header(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header(
        "MCP-Protocol-Version",
        draw(st.one_of(st.none(), st.sampled_from([*SUPPORTED_VERSIONS, *JUNK_VERSIONS]))),
    )


def method_header(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header(
        "Mcp-Method",
        draw(st.one_of(st.none(), st.sampled_from(REQUEST_METHODS), header_text())),
    )


def name_header(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header("Mcp-Name", draw(st.one_of(st.none(), header_text())))


def duplicate_header(draw: st.DrawFn, post: Post, known: Known) -> None:
    name = draw(st.sampled_from(["MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"]))
    value = post.header(name) or "ping"
    post.headers.append((name.lower() if draw(st.booleans()) else name, value))


def accept(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header(
        "Accept",
        draw(
            st.sampled_from([None, "application/json", "text/event-stream", "*/*", "text/html", ""])
        ),
    )


def content_type(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header(
        "Content-Type",
        draw(
            st.sampled_from(
                [None, "text/plain", "application/x-www-form-urlencoded", "application/foo+json"]
            )
        ),
    )


def session(draw: st.DrawFn, post: Post, known: Known) -> None:
    post.set_header(
        "Mcp-Session-Id",
        draw(
            st.one_of(
                st.sampled_from([None, known.sessions["live"], known.sessions["ended"]]),
                header_text(1, 200),
            )
        ),
    )


def response_fields(draw: st.DrawFn, post: Post, known: Known) -> None:
    _message(post)[draw(st.sampled_from(["result", "error"]))] = draw(junk)


def batch(draw: st.DrawFn, post: Post, known: Known) -> None:
    others = draw(st.lists(st.one_of(well_formed(known).map(lambda p: p.body), junk), max_size=2))
    post.body = [post.body, *others] if draw(st.integers(0, 5)) else []


MUTATIONS: list[Mutation] = [
    jsonrpc_version,
    request_id,
    no_id,
    method,
    params,
    arguments,
    arguments,
    meta,
    meta,
    version_header,
    method_header,
    name_header,
    duplicate_header,
    accept,
    content_type,
    session,
    response_fields,
    batch,
    batch,
]


@st.composite
def fuzzed(draw: st.DrawFn, known: Known) -> Post:
    """A well-formed request, left so (two times in five) or broken in one or two ways."""
    post = draw(well_formed(known))
    count = draw(st.sampled_from([0, 0, 1, 1, 2]))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=count, max_size=count)):
        mutation(draw, post, known)
    return post


# --- the gateway and the checks ------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("mcp-fuzz")
    env = local_env(
        make_projects(workdir / "projects"),
        RPA_MCP_WAIT_SECONDS="1",
        RPA_MCP_MAX_WAIT_SECONDS="2",
    )
    (workdir / "gw").mkdir()
    gateway = GatewayProcess(env, workdir / "gw").start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as http:
        yield http


def _rpc(client: httpx.Client, url: str, method: str, params: dict[str, Any]) -> httpx.Response:
    response = client.post(
        url,
        json={"jsonrpc": "2.0", "id": 0, "method": method, "params": params},
        headers={
            "Authorization": "Bearer fuzz",
            "Accept": "application/json",
            "MCP-Protocol-Version": LATEST_HANDSHAKE,
        },
    )
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def known(fuzz_gateway: GatewayProcess, client: httpx.Client) -> Known:
    """A live session (2025-11-25), one ended, and executions: one done, one running."""
    url = fuzz_gateway.base_url + "/mcp"
    found = Known()
    for which in ("live", "ended"):
        response = _rpc(
            client,
            url,
            "initialize",
            {
                "protocolVersion": LATEST_HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"},
            },
        )
        found.sessions[which] = response.headers["mcp-session-id"]
    ended = client.delete(
        url, headers={"Authorization": "Bearer fuzz", "Mcp-Session-Id": found.sessions["ended"]}
    )
    assert ended.status_code == 204, ended.text
    for arguments in (
        {"project_id": "greet", "params": {"name": "Ada"}, "wait_seconds": 2},
        {"project_id": "sleeper", "params": {"seconds": 5}, "wait_seconds": 0},
    ):
        result = _rpc(client, url, "tools/call", {"name": "rpa_run", "arguments": arguments})
        found.executions.append(result.json()["result"]["structuredContent"]["execution_id"])
    return found


def sse_messages(text: str) -> list[Any]:
    """The data of each event of an event stream (multi-line data joined)."""
    found: list[Any] = []
    data: list[str] = []
    for line in [*text.split("\n"), ""]:
        line = line.rstrip("\r")
        if not line:
            if data:
                found.append(json.loads("\n".join(data)))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return found


def check_rpc_response(message: Any) -> None:
    """A JSON-RPC 2.0 response: a result, or an error with an expected code (never -32603)."""
    assert isinstance(message, dict), message
    assert message.get("jsonrpc") == "2.0", message
    assert "id" in message, message
    assert ("result" in message) != ("error" in message), message
    if "result" in message:
        assert isinstance(message["result"], dict), message
        return
    error = message["error"]
    assert isinstance(error, dict) and isinstance(error.get("message"), str), message
    code = error.get("code")
    assert code != INTERNAL_ERROR, f"internal error: {message}"
    assert code in EXPECTED_CODES, f"unexpected code: {message}"


def answered(response: httpx.Response) -> list[Any]:
    """Check a response's form; the JSON-RPC responses it carries."""
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:2000]}"
    if status == 202:
        assert response.content == b"", response.content
        return []
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        assert status == 200, response.text
        events = sse_messages(response.text)
        assert events, f"an event stream without a message: {response.text!r}"
        *notifications, last = events
        for notification in notifications:
            assert isinstance(notification, dict) and "id" not in notification, notification
            assert isinstance(notification.get("method"), str), notification
        check_rpc_response(last)
        return [last]
    assert content_type.startswith("application/json"), (status, content_type, response.text)
    assert status == 200 or 400 <= status < 500, status
    body = response.json()
    if isinstance(body, dict) and "result" in body:
        assert status == 200, (status, body)
    if isinstance(body, list):
        assert status == 200 and body, body
        for item in body:
            check_rpc_response(item)
        return body
    check_rpc_response(body)
    return [body]


def is_request_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def id_problem(sent: Any, response: dict[str, Any]) -> str | None:
    """Why a response's id is not one its request carried (nor null); None when it is."""
    carried = [
        m.get("id") for m in (sent if isinstance(sent, list) else [sent]) if isinstance(m, dict)
    ]
    response_id = response.get("id")
    if response_id is None:
        return None
    if is_request_id(response_id) and any(is_request_id(i) and i == response_id for i in carried):
        return None
    return f"response id {response_id!r} for request ids {carried!r}: {response}"


def check_answer_ids(sent: Any, response: httpx.Response, answers: list[Any]) -> None:
    """Every answer's id is one its request carried, or null (see id_problem); a request
    answered 200 gets its own id back."""
    for message in answers:
        problem = id_problem(sent, message)
        assert problem is None, problem
    if (
        response.status_code == 200
        and isinstance(sent, dict)
        and sent.get("jsonrpc") == "2.0"
        and isinstance(sent.get("method"), str)
        and is_request_id(sent.get("id"))
    ):
        assert [m.get("id") for m in answers] == [sent["id"]], (sent, answers)


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def log_size(gateway: GatewayProcess) -> int:
    return len(gateway.log_text())


def assert_log_clean(gateway: GatewayProcess, since: int) -> None:
    """Nothing the gateway logged since ``since`` is an error or a traceback."""
    log = gateway.log_text()[since:]
    assert "Traceback" not in log, log[-5000:]
    assert " ERROR " not in log, log[-5000:]


# --- the properties ------------------------------------------------------------------------------
def test_arbitrary_json_bodies_get_a_jsonrpc_answer(
    fuzz_gateway: GatewayProcess, client: httpx.Client
) -> None:
    url = fuzz_gateway.base_url + "/mcp"
    logged = log_size(fuzz_gateway)

    @FUZZ
    @given(body=json_values, version=st.one_of(st.none(), st.sampled_from(SUPPORTED_VERSIONS)))
    def run(body: Any, version: str | None) -> None:
        headers = {"Authorization": "Bearer fuzz", "Content-Type": "application/json"}
        if version is not None:
            headers["MCP-Protocol-Version"] = version
        response = client.post(url, content=encode(body), headers=headers)
        check_answer_ids(body, response, answered(response))

    run()
    assert_log_clean(fuzz_gateway, logged)


def test_fuzzed_jsonrpc_requests_get_a_jsonrpc_answer(
    fuzz_gateway: GatewayProcess, client: httpx.Client, known: Known
) -> None:
    url = fuzz_gateway.base_url + "/mcp"
    logged = log_size(fuzz_gateway)

    @FUZZ
    @given(post=fuzzed(known))
    def run(post: Post) -> None:
        response = client.post(url, content=encode(post.body), headers=post.headers)
        check_answer_ids(post.body, response, answered(response))

    run()
    assert_log_clean(fuzz_gateway, logged)


def test_random_bytes_never_fail_the_server(
    fuzz_gateway: GatewayProcess, client: httpx.Client
) -> None:
    url = fuzz_gateway.base_url + "/mcp"
    logged = log_size(fuzz_gateway)
    bodies = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
        json_values.map(encode).flatmap(
            lambda raw: st.integers(0, len(raw)).map(lambda cut: raw[:cut])
        ),
    )

    @FUZZ
    @given(body=bodies, version=st.one_of(st.none(), st.sampled_from(SUPPORTED_VERSIONS)))
    def run(body: bytes, version: str | None) -> None:
        headers = {"Authorization": "Bearer fuzz", "Content-Type": "application/json"}
        if version is not None:
            headers["MCP-Protocol-Version"] = version
        answered(client.post(url, content=body, headers=headers))

    run()
    assert_log_clean(fuzz_gateway, logged)


def test_unsupported_version_error_never_echoes_a_bool_id(
    fuzz_gateway: GatewayProcess, client: httpx.Client
) -> None:
    url = fuzz_gateway.base_url + "/mcp"

    @settings(FUZZ, max_examples=50)
    @given(request_id=odd_ids, version=st.sampled_from(JUNK_VERSIONS))
    @example(request_id=True, version="1999-01-01")
    def run(request_id: Any, version: str) -> None:
        body = {"jsonrpc": "2.0", "id": request_id, "method": "ping"}
        response = client.post(
            url,
            content=encode(body),
            headers={
                "Authorization": "Bearer fuzz",
                "Content-Type": "application/json",
                "MCP-Protocol-Version": version,
            },
        )
        (message,) = answered(response)
        assert message["error"]["code"] == UNSUPPORTED_PROTOCOL_VERSION
        assert id_problem(body, message) is None

    run()
