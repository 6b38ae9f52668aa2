"""``/mcp`` refuses what it must, as the protocol and HTTP say, over real sockets.

Bad JSON and bad JSON-RPC, unknown methods and tools, arguments that break a tool's schema
(refused before anything runs), body limits, batches (2025-03-26 only), sessions (DELETE,
another key's), protocol versions and the 2026-07-28 routing headers, initialize's
negotiation, keys (header and ``?key=``, never logged), Origin and Host, notifications,
Accept and Content-Type, and the older HTTP+SSE transport's message endpoint.

Three gateways on the local backend with the MCP test projects, each shared by the tests
of this module: ``gateway`` (``RPA_MAX_BODY_BYTES=2048``), ``keyed`` (one caller
key, ``?key=`` allowed, access log on) and ``named`` (served as ``core-rpa:17198`` to one
browser origin).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import mcp_support
from tests.gateway_process import GatewayProcess
from tests.mcp_support import (
    LATEST_HANDSHAKE,
    MODERN,
    TOKEN,
    envelope,
    execution_count,
    headers,
    initialize_body,
    local_env,
    make_projects,
    messages,
    modern_headers,
    post,
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

MAX_BODY = 2048
KEY = "mcp-" + secrets.token_hex(12)  # distinctive: found in a log only if it leaked
NAMED_HOST = "core-rpa:17198"
ALLOWED_ORIGIN = "https://app.example.com"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def serve(factory: pytest.TempPathFactory, name: str, **settings: str) -> Iterator[GatewayProcess]:
    root = factory.mktemp(name)
    # A call waits for its (short) run however loaded the machine is.
    env = local_env(make_projects(root / "projects"), RPA_MCP_WAIT_SECONDS="120", **settings)
    (root / "gw").mkdir()
    gateway = GatewayProcess(env, root / "gw").start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from serve(tmp_path_factory, "mcp-protocol", RPA_MAX_BODY_BYTES=str(MAX_BODY))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from serve(
        tmp_path_factory,
        "mcp-keyed",
        RPA_API_KEYS=KEY,
        RPA_MCP_ALLOW_QUERY_KEY="true",
        RPA_ACCESS_LOG="true",
    )


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from serve(
        tmp_path_factory,
        "mcp-named",
        RPA_MCP_ALLOWED_HOSTS=NAMED_HOST,
        RPA_MCP_ALLOWED_ORIGINS=ALLOWED_ORIGIN,
    )


# --- helpers -------------------------------------------------------------------------------------
def raw_post(
    gateway: GatewayProcess, content: bytes, request_headers: Any = None, path: str = "/mcp"
) -> httpx.Response:
    return httpx.post(
        gateway.base_url + path,
        content=content,
        headers=headers() if request_headers is None else request_headers,
        timeout=30,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC error a response carries (its only or last message)."""
    message = messages(response)[-1]
    assert message.get("jsonrpc") == "2.0", message
    assert "error" in message and "result" not in message, message
    error: dict[str, Any] = message["error"]
    return error


def assert_refused(
    response: httpx.Response, status: int, code: int, request_id: Any = None
) -> dict[str, Any]:
    """An HTTP ``status`` whose JSON body is a JSON-RPC error ``code`` for ``request_id``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["jsonrpc"] == "2.0", body
    assert body["id"] == request_id, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return dict(body["error"])


def open_session(
    gateway: GatewayProcess, version: str = LATEST_HANDSHAKE, token: str = TOKEN
) -> tuple[str, dict[str, Any]]:
    return mcp_support.open_session(gateway.base_url, version, token)


def in_session(session_id: str, version: str = LATEST_HANDSHAKE) -> dict[str, str]:
    return {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}


def modern_request(method: str, request_id: int = 1, **params: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": envelope(method, **params),
    }


# --- JSON and JSON-RPC ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [b"{bad", b'{"jsonrpc":"2.0","id":1,"method":"ping"', b"\xff\xfe{}", b"NaN", b"", b"  \n "],
    ids=["not-json", "cut-short", "not-utf8", "nan", "empty", "blank"],
)
def test_a_body_that_is_not_json_is_a_parse_error(gateway: GatewayProcess, content: bytes) -> None:
    assert_refused(raw_post(gateway, content), 400, PARSE_ERROR, None)


@pytest.mark.parametrize(
    ("body", "version", "request_id"),
    [
        ({"foo": 1}, None, None),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, None, 1),
        ({"id": 2, "method": "ping"}, None, 2),
        ({"jsonrpc": "2.0", "id": 3, "method": 5}, None, 3),
        ({"jsonrpc": "2.0", "id": 4, "method": ""}, None, 4),
        ({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": [1]}, None, 5),
        ({"jsonrpc": "2.0", "id": 6, "method": "ping", "params": "x"}, None, 6),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None, None),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None, None),
        ({"jsonrpc": "2.0", "id": 7}, None, 7),
        (42, None, None),
        ("ping", None, None),
        ([1], "2025-11-25", None),
        ([PING], "2025-06-18", None),
    ],
    ids=[
        "no-jsonrpc-member",
        "jsonrpc-1.0",
        "jsonrpc-missing",
        "method-number",
        "method-empty",
        "params-array",
        "params-string",
        "id-null",
        "id-float",
        "id-bool",
        "no-method",
        "number",
        "string",
        "array-at-2025-11-25",
        "batch-at-2025-06-18",
    ],
)
def test_json_that_is_not_jsonrpc_is_an_invalid_request(
    gateway: GatewayProcess, body: Any, version: str | None, request_id: Any
) -> None:
    extra = {"MCP-Protocol-Version": version} if version else {}
    response = post(gateway.base_url, body, extra=extra)
    assert_refused(response, 400, INVALID_REQUEST, request_id)


def test_an_unknown_method_in_a_session_is_200_method_not_found(gateway: GatewayProcess) -> None:
    session_id, _ = open_session(gateway)
    response = post(
        gateway.base_url,
        {"jsonrpc": "2.0", "id": "u-1", "method": "robots/dance"},
        extra=in_session(session_id),
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "u-1"
    assert error_of(response)["code"] == METHOD_NOT_FOUND
    # The session itself is fine: a known method answers.
    ping = post(gateway.base_url, PING, extra=in_session(session_id))
    assert ping.status_code == 200 and ping.json()["result"] == {}, ping.text


def test_an_unknown_method_at_2026_is_404_method_not_found(gateway: GatewayProcess) -> None:
    response = post(
        gateway.base_url,
        modern_request("robots/dance", request_id=9),
        extra=modern_headers("robots/dance"),
    )
    assert_refused(response, 404, METHOD_NOT_FOUND, 9)
    known = post(gateway.base_url, modern_request("tools/list"), extra=modern_headers("tools/list"))
    assert known.status_code == 200 and "tools" in known.json()["result"], known.text


# --- tools/call refused before anything runs -----------------------------------------------------
BAD_CALLS = [
    pytest.param("no_such_tool", {}, "name", "no_such_tool", id="unknown-tool"),
    pytest.param("greet", {}, "name", "name", id="greet-missing-name"),
    pytest.param("greet", {"name": ""}, "name", "name", id="greet-empty-name"),
    pytest.param("sleeper", {"seconds": -1}, "seconds", "seconds", id="sleeper-negative"),
    pytest.param("sleeper", {"seconds": "1"}, "seconds", "seconds", id="sleeper-string"),
    pytest.param(
        "rpa_run", {"project_id": "greet", "colour": "red"}, "colour", "colour", id="run-extra"
    ),
    pytest.param("rpa_run", {"params": {}}, "project_id", "project_id", id="run-no-project"),
    pytest.param(
        "rpa_run",
        {"project_id": "greet", "wait_seconds": -3},
        "wait_seconds",
        "wait_seconds",
        id="run-negative-wait",
    ),
]


@pytest.mark.parametrize(("tool", "arguments", "field", "named"), BAD_CALLS)
def test_a_call_failing_its_tool_schema_is_invalid_params_and_runs_nothing(
    gateway: GatewayProcess, tool: str, arguments: dict[str, Any], field: str, named: str
) -> None:
    session_id, _ = open_session(gateway)
    before = execution_count(gateway.database)
    response = post(
        gateway.base_url,
        {
            "jsonrpc": "2.0",
            "id": 11,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        },
        extra=in_session(session_id),
    )
    assert response.status_code == 200, response.text
    error = error_of(response)
    assert error["code"] == INVALID_PARAMS, error
    assert error["data"]["field"] == field, error
    assert named in error["message"], error
    assert execution_count(gateway.database) == before


@pytest.mark.parametrize(("tool", "arguments", "field", "named"), BAD_CALLS)
def test_a_call_failing_its_tool_schema_at_2026_is_400_and_runs_nothing(
    gateway: GatewayProcess, tool: str, arguments: dict[str, Any], field: str, named: str
) -> None:
    before = execution_count(gateway.database)
    response = post(
        gateway.base_url,
        modern_request("tools/call", name=tool, arguments=arguments),
        # JSON only: a call answered later than 0.25 s (a loaded machine) would otherwise
        # come as an event stream, whose status (200) was sent before the answer was known.
        extra={**modern_headers("tools/call", tool), "Accept": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == INVALID_PARAMS, error
    assert error["data"]["field"] == field, error
    assert named in error["message"], error
    assert execution_count(gateway.database) == before


def test_a_valid_call_records_exactly_one_execution(gateway: GatewayProcess) -> None:
    """The control for the tests above: the count they compare does see a run start."""
    before = execution_count(gateway.database)
    response = post(
        gateway.base_url,
        {
            "jsonrpc": "2.0",
            "id": 12,
            "method": "tools/call",
            "params": {"name": "greet", "arguments": {"name": "Ada"}},
        },
        extra={"MCP-Protocol-Version": LATEST_HANDSHAKE, "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()["result"]
    assert result["structuredContent"]["result"] == {"greeting": "Hello, Ada!"}, result
    assert execution_count(gateway.database) == before + 1


# --- body size -----------------------------------------------------------------------------------
def padded_ping(size: int) -> bytes:
    """A valid ping request of exactly ``size`` bytes."""
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"pad":"'
    tail = b'"}}}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    json.loads(body)
    return body


def test_a_body_at_the_limit_is_read(gateway: GatewayProcess) -> None:
    response = raw_post(gateway, padded_ping(MAX_BODY))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {}


def test_a_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    before = execution_count(gateway.database)
    response = raw_post(gateway, padded_ping(3000))
    error = assert_refused(response, 413, INVALID_REQUEST)
    assert "RPA_MAX_BODY_BYTES" in error["message"], error
    assert execution_count(gateway.database) == before


def test_a_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    """No Content-Length to go by: the limit holds while the body is read."""
    body = padded_ping(3000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = httpx.post(
        gateway.base_url + "/mcp", content=chunks(), headers=headers(), timeout=30
    )
    assert "content-length" not in response.request.headers
    assert_refused(response, 413, INVALID_REQUEST)


# --- batches -------------------------------------------------------------------------------------
def two_requests() -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": "second", "method": "tools/list"},
    ]


def test_a_batch_without_version_or_session_is_answered_at_2025_03_26(
    gateway: GatewayProcess,
) -> None:
    response = post(gateway.base_url, two_requests())
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 2, answers
    by_id = {answer["id"]: answer for answer in answers}
    assert by_id[1]["result"] == {}, answers
    tools = {tool["name"] for tool in by_id["second"]["result"]["tools"]}
    assert {"greet", "sleeper", "rpa_run"} <= tools, tools


def test_a_batch_keeps_each_messages_own_error(gateway: GatewayProcess) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "robots/dance"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 5, "result": {}},
    ]
    response = post(gateway.base_url, batch)
    assert response.status_code == 200, response.text
    by_id = {answer["id"]: answer for answer in response.json()}
    assert by_id.keys() == {1, 2, 3, 4}, by_id  # none to the notification, nor the response
    assert by_id[1]["result"] == {}
    assert by_id[2]["error"]["code"] == INVALID_REQUEST
    assert by_id[3]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id[4]["error"]["code"] == INVALID_REQUEST  # initialize is never batched


@pytest.mark.parametrize("version", ["2025-06-18", LATEST_HANDSHAKE])
def test_a_batch_after_2025_03_26_is_refused(gateway: GatewayProcess, version: str) -> None:
    response = post(gateway.base_url, two_requests(), extra={"MCP-Protocol-Version": version})
    error = assert_refused(response, 400, INVALID_REQUEST)
    assert version in error["message"], error


def test_an_empty_batch_is_refused(gateway: GatewayProcess) -> None:
    assert_refused(post(gateway.base_url, []), 400, INVALID_REQUEST)


def test_a_batch_at_2026_is_refused(gateway: GatewayProcess) -> None:
    response = post(
        gateway.base_url,
        [modern_request("tools/list", 1), modern_request("tools/list", 2)],
        extra=modern_headers("tools/list"),
    )
    assert_refused(response, 400, INVALID_REQUEST)


@pytest.mark.parametrize(("version", "batches"), [("2025-03-26", True), ("2025-06-18", False)])
def test_a_session_speaks_the_version_its_initialize_settled_on(
    gateway: GatewayProcess, version: str, batches: bool
) -> None:
    session_id, result = open_session(gateway, version)
    assert result["protocolVersion"] == version
    response = post(gateway.base_url, two_requests(), extra={"Mcp-Session-Id": session_id})
    if batches:
        assert response.status_code == 200, response.text
        assert len(response.json()) == 2
    else:
        assert_refused(response, 400, INVALID_REQUEST)


# --- HTTP methods and sessions -------------------------------------------------------------------
def test_get_is_405_naming_the_allowed_methods(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.base_url + "/mcp", headers=headers(), timeout=30)
    assert_refused(response, 405, INVALID_REQUEST)
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert "POST" in allowed and "GET" not in allowed, allowed


def delete(gateway: GatewayProcess, session_id: str | None, token: str = TOKEN) -> httpx.Response:
    extra = {"Mcp-Session-Id": session_id} if session_id is not None else {}
    return httpx.delete(gateway.base_url + "/mcp", headers=headers(token, **extra), timeout=30)


def test_delete_ends_a_session(gateway: GatewayProcess) -> None:
    session_id, _ = open_session(gateway)
    assert post(gateway.base_url, PING, extra=in_session(session_id)).status_code == 200
    ended = delete(gateway, session_id)
    assert ended.status_code == 204, ended.text
    assert ended.content == b""
    assert_refused(post(gateway.base_url, PING, extra=in_session(session_id)), 404, INVALID_REQUEST)
    assert_refused(delete(gateway, session_id), 404, INVALID_REQUEST)


def test_delete_without_a_session_id_is_400(gateway: GatewayProcess) -> None:
    assert_refused(delete(gateway, None), 400, INVALID_REQUEST)


def test_a_session_belongs_to_its_key(gateway: GatewayProcess) -> None:
    session_id, _ = open_session(gateway, token="alice")
    as_bob = post(gateway.base_url, PING, token="bob", extra=in_session(session_id))
    assert_refused(as_bob, 404, INVALID_REQUEST)
    assert_refused(delete(gateway, session_id, token="bob"), 404, INVALID_REQUEST)
    # Bob could neither use nor end it: it is still Alice's.
    as_alice = post(gateway.base_url, PING, token="alice", extra=in_session(session_id))
    assert as_alice.status_code == 200, as_alice.text
    assert delete(gateway, session_id, token="alice").status_code == 204


def test_an_unknown_session_id_is_404(gateway: GatewayProcess) -> None:
    response = post(gateway.base_url, PING, extra=in_session("no-such-session"))
    assert_refused(response, 404, INVALID_REQUEST)


# --- protocol versions ---------------------------------------------------------------------------
def test_an_unsupported_protocol_version_is_400_naming_the_supported_ones(
    gateway: GatewayProcess,
) -> None:
    response = post(
        gateway.base_url,
        {"jsonrpc": "2.0", "id": 7, "method": "ping"},
        extra={"MCP-Protocol-Version": "1999-01-01"},
    )
    error = assert_refused(response, 400, UNSUPPORTED_PROTOCOL_VERSION, 7)
    assert {LATEST_HANDSHAKE, MODERN} <= set(error["data"]["supported"]), error
    assert error["data"]["requested"] == "1999-01-01", error


@pytest.mark.parametrize(
    ("headers_", "body_version", "name"),
    [
        pytest.param({"MCP-Protocol-Version": MODERN}, MODERN, "greet", id="no-mcp-method"),
        pytest.param(modern_headers("tools/list"), MODERN, "greet", id="other-mcp-method"),
        pytest.param(modern_headers("tools/call"), MODERN, "greet", id="no-mcp-name"),
        pytest.param(modern_headers("tools/call", "sleeper"), MODERN, "greet", id="other-name"),
        pytest.param(
            modern_headers("tools/call", "greet"), LATEST_HANDSHAKE, "greet", id="meta-version"
        ),
    ],
)
def test_2026_routing_headers_must_match_the_body(
    gateway: GatewayProcess, headers_: dict[str, str], body_version: str, name: str
) -> None:
    before = execution_count(gateway.database)
    body = modern_request(
        "tools/call",
        request_id=21,
        name=name,
        arguments={"name": "Ada"},
        meta={"io.modelcontextprotocol/protocolVersion": body_version},
    )
    response = post(gateway.base_url, body, extra=headers_)
    assert_refused(response, 400, HEADER_MISMATCH, 21)
    assert execution_count(gateway.database) == before


def test_2026_matching_headers_are_served(gateway: GatewayProcess) -> None:
    """The control for the header checks: the same call, headers right, runs."""
    before = execution_count(gateway.database)
    body = modern_request("tools/call", name="greet", arguments={"name": "Ada"})
    response = post(
        gateway.base_url,
        body,
        extra={**modern_headers("tools/call", "greet"), "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["status"] == "succeeded"
    assert execution_count(gateway.database) == before + 1


def test_a_duplicated_routing_header_is_a_mismatch(gateway: GatewayProcess) -> None:
    raw = [
        *headers().items(),
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", "tools/list"),
        ("Mcp-Method", "tools/list"),  # the same value, twice: still refused
    ]
    response = raw_post(gateway, json.dumps(modern_request("tools/list", 5)).encode(), raw)
    assert_refused(response, 400, HEADER_MISMATCH, 5)
    once = raw_post(gateway, json.dumps(modern_request("tools/list", 5)).encode(), raw[:-1])
    assert once.status_code == 200, once.text


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"_meta": {}},
        {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}},
        {"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}},
        {"_meta": "2026-07-28"},
    ],
    ids=["no-meta", "empty-meta", "no-capabilities", "no-version", "meta-string"],
)
def test_a_2026_request_without_its_envelope_is_invalid_params(
    gateway: GatewayProcess, params: dict[str, Any]
) -> None:
    body = {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": params}
    response = post(gateway.base_url, body, extra=modern_headers("tools/list"))
    assert_refused(response, 400, INVALID_PARAMS, 6)


def test_server_discover_names_2026_and_the_tools(gateway: GatewayProcess) -> None:
    response = post(
        gateway.base_url, modern_request("server/discover"), extra=modern_headers("server/discover")
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert MODERN in result["supportedVersions"], result
    assert "tools" in result["capabilities"], result


def test_initialize_answers_the_version_asked_when_supported(gateway: GatewayProcess) -> None:
    _, result = open_session(gateway, "2025-06-18")
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "rpa-gateway"


def test_initialize_answers_its_latest_for_an_unknown_version(gateway: GatewayProcess) -> None:
    session_id, result = open_session(gateway, "2030-01-01")
    assert result["protocolVersion"] == LATEST_HANDSHAKE
    # The session speaks what was negotiated: no batches at 2025-11-25.
    response = post(gateway.base_url, two_requests(), extra={"Mcp-Session-Id": session_id})
    assert_refused(response, 400, INVALID_REQUEST)


# --- keys ----------------------------------------------------------------------------------------
def test_no_key_is_401_with_a_bearer_challenge(gateway: GatewayProcess) -> None:
    response = post(gateway.base_url, PING, token=None)
    assert_refused(response, 401, INVALID_REQUEST)
    assert response.headers["www-authenticate"] == "Bearer"


def test_only_the_configured_key_is_a_caller(keyed: GatewayProcess) -> None:
    wrong = post(keyed.base_url, PING, token="k1")
    assert_refused(wrong, 401, INVALID_REQUEST)
    assert wrong.headers["www-authenticate"] == "Bearer"
    right = post(keyed.base_url, PING, token=KEY)
    assert right.status_code == 200 and right.json()["result"] == {}, right.text


def test_a_key_in_the_url_is_taken_only_where_allowed(
    gateway: GatewayProcess, keyed: GatewayProcess
) -> None:
    # Allowed (RPA_MCP_ALLOW_QUERY_KEY=true): the key in the URL is the caller's key...
    allowed = post(keyed.base_url, PING, token=None, path=f"/mcp?key={KEY}")
    assert allowed.status_code == 200, allowed.text
    wrong = post(keyed.base_url, PING, token=None, path="/mcp?key=k1")
    assert_refused(wrong, 401, INVALID_REQUEST)
    # ...not allowed (the default): the same key works as a header, not in the URL.
    assert post(gateway.base_url, PING, token="k1").status_code == 200
    refused = post(gateway.base_url, PING, token=None, path="/mcp?key=k1")
    assert_refused(refused, 401, INVALID_REQUEST)


def test_a_key_in_the_url_never_reaches_the_log(keyed: GatewayProcess) -> None:
    for path in (f"/mcp?key={KEY}", f"/mcp?session=1&key={KEY}", f"/mcp/sse?key={KEY}&x=1"):
        if path.startswith("/mcp/sse"):
            with httpx.stream("GET", keyed.base_url + path, timeout=30) as stream:
                assert stream.status_code == 200
        else:
            assert post(keyed.base_url, PING, token=None, path=path).status_code == 200
    log = keyed.log_text()
    assert '"POST /mcp?key=' in log, "the access log is on: the request line is logged"
    assert KEY not in log


def test_a_percent_encoded_key_parameter_never_reaches_the_log(keyed: GatewayProcess) -> None:
    response = post(keyed.base_url, PING, token=None, path=f"/mcp?ke%79={KEY}")
    assert response.status_code == 200, response.text  # taken as the caller's key
    assert KEY not in keyed.log_text()


# --- Origin and Host -----------------------------------------------------------------------------
def test_a_browser_origin_is_refused_by_default(gateway: GatewayProcess) -> None:
    response = post(gateway.base_url, PING, extra={"Origin": "http://evil.example"})
    assert_refused(response, 403, INVALID_REQUEST)
    assert post(gateway.base_url, PING).status_code == 200  # no Origin: not a browser


def test_an_allowed_origin_passes_and_others_are_403(named: GatewayProcess) -> None:
    host = {"Host": NAMED_HOST}
    allowed = post(named.base_url, PING, extra={**host, "Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200, allowed.text
    for origin in ("https://evil.example", "http://app.example.com", "null"):
        other = post(named.base_url, PING, extra={**host, "Origin": origin})
        assert_refused(other, 403, INVALID_REQUEST)
    assert post(named.base_url, PING, extra=host).status_code == 200


def test_a_service_on_loopback_answers_only_loopback_names(gateway: GatewayProcess) -> None:
    refused = post(gateway.base_url, PING, extra={"Host": NAMED_HOST})
    assert_refused(refused, 421, INVALID_REQUEST)
    for name in (f"localhost:{gateway.port}", f"127.0.0.1:{gateway.port}"):
        assert post(gateway.base_url, PING, extra={"Host": name}).status_code == 200, name


def test_allowed_hosts_are_answered_and_others_are_421(named: GatewayProcess) -> None:
    body = initialize_body()
    response = post(named.base_url, body, extra={"Host": NAMED_HOST})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["protocolVersion"] == LATEST_HANDSHAKE
    assert response.headers["mcp-session-id"]
    for host in ("other:1", "core-rpa:17199", f"127.0.0.1:{named.port}"):
        assert_refused(post(named.base_url, body, extra={"Host": host}), 421, INVALID_REQUEST)


# --- notifications, responses, Accept and Content-Type -------------------------------------------
@pytest.mark.parametrize(
    ("body", "extra"),
    [
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, {}),
        ({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}, {}),
        ({"jsonrpc": "2.0", "id": 5, "result": {}}, {}),
        ({"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "no"}}, {}),
        (
            {"jsonrpc": "2.0", "method": "notifications/initialized", "params": envelope("x")},
            {"MCP-Protocol-Version": MODERN},
        ),
        ([{"jsonrpc": "2.0", "method": "notifications/initialized"}], {}),
    ],
    ids=["initialized", "cancelled", "result", "error", "at-2026", "batch-of-one-notification"],
)
def test_notifications_and_responses_are_202_with_no_body(
    gateway: GatewayProcess, body: Any, extra: dict[str, str]
) -> None:
    response = post(gateway.base_url, body, extra=extra)
    assert response.status_code == 202, response.text
    assert response.content == b""


def test_an_accept_without_json_or_event_stream_is_406(gateway: GatewayProcess) -> None:
    response = post(gateway.base_url, PING, extra={"Accept": "text/html"})
    assert_refused(response, 406, INVALID_REQUEST)


@pytest.mark.parametrize("accept", ["application/*", "*/*", "application/json;q=0.5"])
def test_an_accept_covering_json_is_answered(gateway: GatewayProcess, accept: str) -> None:
    response = post(gateway.base_url, PING, extra={"Accept": accept})
    assert response.status_code == 200, response.text


def test_an_accept_refusing_json_by_quality_zero_is_406(gateway: GatewayProcess) -> None:
    response = post(gateway.base_url, PING, extra={"Accept": "application/json;q=0"})
    assert_refused(response, 406, INVALID_REQUEST)


def test_a_quick_call_is_streamed_to_a_client_taking_only_streams(
    gateway: GatewayProcess,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "greet", "arguments": {"name": "Ed"}},
    }
    response = post(gateway.base_url, body, extra={"Accept": "text/event-stream"})
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    (answer,) = messages(response)
    assert answer["result"]["structuredContent"]["result"] == {"greeting": "Hello, Ed!"}


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_tasks_are_not_served_before_2025_11_25(gateway: GatewayProcess, version: str) -> None:
    session_id, _ = open_session(gateway, version)
    body = {"jsonrpc": "2.0", "id": 4, "method": "tasks/list", "params": {}}
    response = post(gateway.base_url, body, extra=in_session(session_id, version))
    assert error_of(response)["code"] == METHOD_NOT_FOUND


def call_sleeper(gateway: GatewayProcess, accept: str) -> httpx.Response:
    """A call that runs for a second and reports progress as it goes."""
    body = {
        "jsonrpc": "2.0",
        "id": 8,
        "method": "tools/call",
        "params": {
            "name": "rpa_run",
            "arguments": {"project_id": "sleeper", "params": {"seconds": 1}, "wait_seconds": 60},
            "_meta": {"progressToken": "p-8"},
        },
    }
    return post(gateway.base_url, body, extra={"Accept": accept}, timeout=60)


def test_a_long_call_is_streamed_with_its_progress_when_accepted(gateway: GatewayProcess) -> None:
    response = call_sleeper(gateway, "application/json, text/event-stream")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    *progress, answer = messages(response)
    assert progress, response.text
    for notification in progress:
        assert notification["method"] == "notifications/progress", notification
        assert notification["params"]["progressToken"] == "p-8", notification
    assert answer["id"] == 8
    assert answer["result"]["structuredContent"]["status"] == "succeeded", answer


def test_a_long_call_is_one_json_answer_when_only_json_is_accepted(
    gateway: GatewayProcess,
) -> None:
    response = call_sleeper(gateway, "application/json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    answer = response.json()
    assert answer["id"] == 8
    assert answer["result"]["structuredContent"]["status"] == "succeeded", answer


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(
    gateway: GatewayProcess, content_type: str
) -> None:
    before = execution_count(gateway.database)
    call = {
        "jsonrpc": "2.0",
        "id": 8,
        "method": "tools/call",
        "params": {"name": "greet", "arguments": {"name": "Ada"}},
    }
    response = post(gateway.base_url, call, extra={"Content-Type": content_type})
    assert_refused(response, 415, INVALID_REQUEST)
    assert execution_count(gateway.database) == before


def test_a_json_suffix_content_type_is_json(gateway: GatewayProcess) -> None:
    extra = {"Content-Type": "application/vnd.example+json; charset=utf-8"}
    response = post(gateway.base_url, PING, extra=extra)
    assert response.status_code == 200, response.text


# --- the older HTTP+SSE transport ----------------------------------------------------------------
def test_sse_messages_need_a_known_session(gateway: GatewayProcess) -> None:
    unknown = post(gateway.base_url, PING, path="/mcp/messages/?session_id=unknown")
    assert_refused(unknown, 404, INVALID_REQUEST)
    missing = post(gateway.base_url, PING, path="/mcp/messages/")
    assert_refused(missing, 400, INVALID_REQUEST)


def test_sse_messages_reach_their_stream_and_only_their_key(gateway: GatewayProcess) -> None:
    """The control for the refusals above: a session its stream announced takes messages
    from its own key only, and the answer arrives on the stream."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        httpx.Client(base_url=gateway.base_url, timeout=30) as client,
        client.stream("GET", "/mcp/sse", headers=auth) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        endpoint = next(line for line in lines if line.startswith("data:"))[5:].strip()
        assert endpoint.startswith("messages/?session_id="), endpoint
        path = "/mcp/" + endpoint
        other = client.post(path, json=PING, headers=headers("someone-else"))
        assert_refused(other, 404, INVALID_REQUEST)
        accepted = client.post(path, json={**PING, "id": 31}, headers=headers())
        assert accepted.status_code == 202, accepted.text
        data = next(line for line in lines if line.startswith("data:"))
        assert json.loads(data[5:]) == {"jsonrpc": "2.0", "id": 31, "result": {}}
