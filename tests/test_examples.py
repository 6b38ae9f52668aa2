"""The shipped example projects run as the README says, on the default (local) backend."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.gateway_process import GatewayProcess
from tests.native_client import auth
from tests.sse_client import exec_stream

EXAMPLES = Path(__file__).resolve().parent.parent / "projects"


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> GatewayProcess:
    # No XIAOWU_RPA_TASK_CREATE_URL: the local backend is the default.
    return start_gateway(upstream=False, RPA_PROJECTS_DIR=str(EXAMPLES))


@pytest.fixture
def web_page() -> Iterator[str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/to/"):  # /to/<url>: a redirect there
                self.send_response(302)
                self.send_header("Location", self.path[4:])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"<html><head><title>  Local\n test page </title></head><body>hi</body></html>"
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_hello_as_in_the_quickstart(gateway: GatewayProcess) -> None:
    result = exec_stream(
        gateway.base_url, {"project_id": "hello", "params": {"name": "Ada"}}, token="Bearer t"
    )
    assert result.terminal["code"] == 0
    assert result.terminal["data"] == {"greeting": "Hello, Ada!", "params": {"name": "Ada"}}
    assert "backend local serves" in gateway.log_text()


def test_countdown_reports_progress_each_second(gateway: GatewayProcess) -> None:
    result = exec_stream(
        gateway.base_url,
        {"project_id": "countdown", "params": {"seconds": 2}},
        params={"progress": "true"},
    )
    progress = [f["data"]["progress"] for f in result.frames[:-1]]
    assert progress == [
        {"message": "2 s left", "percent": 0.0},
        {"message": "1 s left", "percent": 50.0},
    ]
    assert result.frames[-1]["code"] == 0 and result.frames[-1]["data"]["seconds"] == 2


def page_title(gateway: GatewayProcess, url: str) -> dict[str, object]:
    return exec_stream(
        gateway.base_url, {"project_id": "page-title", "params": {"url": url}}
    ).terminal


def test_page_title_fetches_a_page(start_gateway: GatewayFactory, web_page: str) -> None:
    # The test page is on loopback, which page-title refuses unless the host is allowed.
    gateway = start_gateway(
        upstream=False, RPA_PROJECTS_DIR=str(EXAMPLES), PAGE_TITLE_ALLOW_HOSTS="127.0.0.1"
    )
    data = page_title(gateway, web_page)["data"]
    assert (data["status"], data["title"], data["url"]) == (200, "Local test page", web_page)  # type: ignore[index]
    assert page_title(gateway, web_page + "gone")["data"]["status"] == 404  # type: ignore[index]
    unreachable = page_title(gateway, "http://127.0.0.1:9/")
    assert unreachable["code"] == 55002 and "cannot fetch" in unreachable["message"]  # type: ignore[operator]
    bad = exec_stream(gateway.base_url, {"project_id": "page-title", "params": {"url": "ftp:x"}})
    assert bad.status_code == 422
    # An allowed host redirecting to one that is not: the redirect's target is checked too.
    port = web_page.rsplit(":", 1)[1]
    redirected = page_title(gateway, f"{web_page}to/http://localhost:{port}/")
    assert redirected["code"] == 55002
    assert "localhost resolves to 127.0.0.1" in redirected["message"]  # type: ignore[operator]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0:{port}/",
        "http://[64:ff9b::a00:1]/",  # NAT64: reaches 10.0.0.1 where NAT64 routes
        "http://[::7f00:1]:{port}/",  # IPv4-compatible 127.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    ],
)
def test_page_title_refuses_internal_addresses(
    gateway: GatewayProcess, web_page: str, url: str
) -> None:
    port = web_page.rsplit(":", 1)[1].rstrip("/")
    refused = page_title(gateway, url.format(port=port))
    assert refused["code"] == 55002
    assert "not a public address" in refused["message"]  # type: ignore[operator]


def test_projects_are_listed(gateway: GatewayProcess) -> None:
    listed = httpx.get(f"{gateway.base_url}/rpa/v1/projects", headers=auth("t")).json()
    ids = [p["id"] for p in listed["projects"]]
    assert ids == ["countdown", "hello", "page-title"]
    countdown = listed["projects"][0]
    assert countdown["params_schema"]["required"] == ["seconds"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpa_gateway", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_run_shows_progress_and_prints_the_result(gateway: GatewayProcess) -> None:
    done = cli("countdown", "-p", "seconds=1", "--url", gateway.base_url)
    assert done.returncode == 0, done.stderr
    assert '"seconds": 1' in done.stdout
    assert "[  0.0%] 1 s left" in done.stderr


def test_cli_run_fails_with_the_message(gateway: GatewayProcess) -> None:
    failed = cli("page-title", "-p", "url=http://127.0.0.1:9/", "--url", gateway.base_url)
    assert failed.returncode == 1
    assert "failed (55002)" in failed.stderr and "not a public address" in failed.stderr
    refused = cli("no-such-project", "--url", gateway.base_url)
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "refused (HTTP 422): Create task error, detail: no project 'no-such-project'"
    ), refused.stderr  # the message, not the raw frame it came in
    assert "data:" not in refused.stderr
    unreachable = cli("hello", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
