"""The web monitor in a real browser: Debian's headless Chromium driven by Selenium, against a
gateway process on the local backend (the shipped example projects)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import GatewayFactory
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.gateway_process import GatewayProcess
from tests.native_client import start_execution
from tests.nginx_proxy import NginxProxy

EXAMPLES = Path(__file__).resolve().parent.parent / "projects"
ADMIN = "operator-key-for-tests"
# MONITOR_SCREENSHOTS=docs writes the README's screenshots there.
SCREENSHOTS = os.environ.get("MONITOR_SCREENSHOTS")


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> GatewayProcess:
    return start_gateway(
        upstream=False,
        RPA_BACKEND="local",
        RPA_PROJECTS_DIR=str(EXAMPLES),
        RPA_ADMIN_KEYS=ADMIN,
        RPA_DRAIN_SECONDS="1",
    )


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "chromium and chromium-driver are needed: deploy/system-packages.sh installs them"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    # The page keeps to its own Content-Security-Policy (no inline style or script): a
    # violation is a console error, whichever test's page caused it.
    violations = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    driver.quit()
    assert violations == []


def screenshot(browser: WebDriver, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(Path(SCREENSHOTS) / name))


def until(browser: WebDriver, check: Callable[[], object], within: float = 10.0) -> object:
    return WebDriverWait(browser, within, poll_frequency=0.05).until(lambda _: check())


def sign_in(browser: WebDriver, base_url: str, token: str) -> None:
    browser.get(f"{base_url}/monitor")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    until(browser, lambda: connection(browser) == "live")


def connection(browser: WebDriver) -> str:
    return str(browser.find_element(By.ID, "connection").get_attribute("data-state"))


# Read and clicked in one script each: the list is redrawn as changes arrive, so an element
# found in one call may be gone by the next.
def row_status(browser: WebDriver, execution_id: str) -> str | None:
    found = browser.execute_script(
        "const row = document.querySelector(`tr[data-id='${arguments[0]}']`);"
        " return row ? row.dataset.status : null;",
        execution_id,
    )
    return str(found) if found is not None else None


def open_row(browser: WebDriver, execution_id: str) -> None:
    browser.execute_script(
        "document.querySelector(`tr[data-id='${arguments[0]}']`).click();", execution_id
    )


def result_code(browser: WebDriver) -> str | None:
    code = browser.find_element(By.ID, "detail-result").get_attribute("data-code")
    return str(code) if code is not None else None


def start(gateway: GatewayProcess, token: str, project: str, params: dict[str, object]) -> str:
    return start_execution(gateway.base_url, token, project, params)


def test_executions_appear_live_and_can_be_followed_and_cancelled(
    gateway: GatewayProcess, browser: WebDriver
) -> None:
    sign_in(browser, gateway.base_url, "alice")
    assert "alice" not in browser.current_url  # the token never goes into a URL

    greeting = start(gateway, "alice", "hello", {"name": "Ada"})
    until(browser, lambda: row_status(browser, greeting) is not None, within=1.0)
    until(browser, lambda: row_status(browser, greeting) == "SUCCEEDED")
    others = start(gateway, "bob", "hello", {"name": "Bob"})

    counting = start(gateway, "alice", "countdown", {"seconds": 4})
    until(browser, lambda: row_status(browser, counting) is not None, within=1.0)
    open_row(browser, counting)

    def width() -> float:
        return float(
            browser.execute_script(
                "return parseFloat(document.getElementById('detail-progress').style.width) || 0;"
            )
        )

    until(browser, lambda: 0 < width() < 100)
    first = width()
    until(browser, lambda: width() > first)  # it advances as progress events arrive
    until(
        browser,
        lambda: result_code(browser) == "0",
    )
    screenshot(browser, "monitor-execution.png")
    browser.find_element(By.ID, "detail-close").click()

    long = start(gateway, "alice", "countdown", {"seconds": 60})
    until(browser, lambda: row_status(browser, long) == "RUNNING")
    open_row(browser, long)
    until(browser, lambda: browser.find_element(By.ID, "detail-cancel").is_enabled())
    browser.find_element(By.ID, "detail-cancel").click()
    until(
        browser,
        lambda: result_code(browser) == "55004",
    )
    browser.find_element(By.ID, "detail-close").click()
    until(browser, lambda: row_status(browser, long) == "CANCELLED")

    assert row_status(browser, others) is None  # another token's execution never shows
    counts = browser.execute_script(  # in one script: the counts are redrawn every second
        "return Object.fromEntries([...document.querySelectorAll('.count')]"
        ".map(e => [e.dataset.status, e.textContent]));"
    )
    assert counts["SUCCEEDED"] == "SUCCEEDED 2" and counts["CANCELLED"] == "CANCELLED 1"
    outcomes = browser.execute_script(
        "return [...document.querySelectorAll('#chart-rate rect')].map(r => r.dataset.outcome);"
    )
    assert set(outcomes) == {"SUCCEEDED", "CANCELLED"}
    projects = browser.execute_script(
        "return [...document.querySelectorAll('#chart-durations rect')]"
        ".map(r => r.dataset.project);"
    )
    assert set(projects) == {"hello", "countdown"}
    screenshot(browser, "monitor-list.png")

    browser.find_element(By.ID, "sign-out").click()
    sign_in(browser, gateway.base_url, ADMIN)  # an operator sees everyone's
    until(browser, lambda: row_status(browser, others) == "SUCCEEDED")
    assert row_status(browser, greeting) == "SUCCEEDED"


def test_a_page_left_open_across_a_restart_reconnects_and_catches_up(
    gateway: GatewayProcess, browser: WebDriver
) -> None:
    sign_in(browser, gateway.base_url, "carol")
    before = start(gateway, "carol", "hello", {"name": "before"})
    until(browser, lambda: row_status(browser, before) == "SUCCEEDED")

    gateway.stop()
    until(browser, lambda: connection(browser) == "reconnecting")
    gateway.start()
    during = start(gateway, "carol", "hello", {"name": "while the page reconnects"})
    until(browser, lambda: connection(browser) == "live")
    until(browser, lambda: row_status(browser, during) == "SUCCEEDED")
    after = start(gateway, "carol", "hello", {"name": "after"})
    until(browser, lambda: row_status(browser, after) == "SUCCEEDED", within=2.0)


def test_the_monitor_works_through_nginx(
    gateway: GatewayProcess, browser: WebDriver, tmp_path: Path
) -> None:
    proxy = NginxProxy(tmp_path / "nginx", [gateway.port]).start()
    try:
        sign_in(browser, proxy.base_url, "dave")
        counting = start(gateway, "dave", "countdown", {"seconds": 2})
        until(browser, lambda: row_status(browser, counting) is not None, within=1.0)
        until(browser, lambda: row_status(browser, counting) == "SUCCEEDED")
    finally:
        proxy.stop()


def webhook_health(browser: WebDriver) -> dict[str, str]:
    found = browser.execute_script(
        "return [...document.querySelectorAll('#webhook-table tbody tr')]"
        ".map((row) => [row.dataset.id, row.dataset.health, row.textContent]);"
    )
    return {str(row[0]): f"{row[1]}|{row[2]}" for row in found}


def test_each_webhook_endpoints_health_is_shown(
    start_gateway: GatewayFactory, browser: WebDriver
) -> None:
    receiver = WebhookReceiver().start()
    try:
        gateway = start_gateway(
            upstream=False,
            RPA_BACKEND="local",
            RPA_PROJECTS_DIR=str(EXAMPLES),
            RPA_WEBHOOK_ALLOW_PRIVATE="true",
            RPA_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
            RPA_WEBHOOK_RETRY_SCHEDULE="30",
        )
        made = {}
        scripts = {"fine": {}, "failing": {"fail_first": 99}, "gone": {"gone": True}}
        for name, script in scripts.items():
            reply = httpx.post(
                f"{gateway.base_url}/rpa/v1/webhooks",
                json={"url": receiver.url(name)},
                headers={"Authorization": "Bearer carol"},
                timeout=10,
            )
            made[name] = reply.json()["id"]
            receiver.inbox(name, reply.json()["secret"], **script)
        start(gateway, "carol", "hello", {"name": "Ada"})
        sign_in(browser, gateway.base_url, "carol")
        expected = {made["fine"]: "healthy", made["failing"]: "failing", made["gone"]: "disabled"}

        def shown() -> bool:
            health = webhook_health(browser)
            return {k: v.split("|")[0] for k, v in health.items()} == expected

        until(browser, shown, within=20.0)
        rows = webhook_health(browser)
        assert "410" in rows[made["gone"]] and "HTTP 500" in rows[made["failing"]]
        assert "delivered (HTTP 204)" in rows[made["fine"]]
        assert "/hook/" not in "".join(rows.values()), "the host only, never the whole URL"
        screenshot(browser, "monitor-webhooks.png")
    finally:
        receiver.stop()
