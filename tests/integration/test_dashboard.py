"""The live dashboard in headless Chromium (Debian's chromium and chromedriver, driven by
Selenium) against the running stack: it loads, its numbers move, an injected alert shows, and
after the gateway is killed and restarted it resumes from its positions."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from tests.integration.roles import wait_for
from tests.integration.supervised import Up
from tests.integration.test_supervision import supervised

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):  # installed by `make` (infra/deps.sh); never skipped
        assert shutil.which(path), (
            f"{path} is missing: run infra/deps.sh (Debian packages chromium, chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1500,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: webdriver.Chrome, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def test_the_dashboard_shows_the_live_stack_and_resumes_after_a_gateway_restart(
    settings: Settings, browser: webdriver.Chrome
) -> None:
    # a key for just the dashboard's channels: the page passes it on, and every subscribe is checked
    key = SecretStr("screen-key=markets,alerts,predictions,models,health")
    settings = supervised(settings).model_copy(update={"gateway_api_keys": [key]})
    ensure_topics(settings)
    up = Up(settings, simulate=True)
    try:
        up.wait_ready()
        assert f"Dashboard           http://{settings.gateway_host}:{settings.gateway_port}/" in up.output()
        browser.get(f"http://127.0.0.1:{settings.gateway_port}/")  # no key: the page says it cannot connect
        wait_for("the page to be refused", lambda: text(browser, "#status").startswith("disconnected"), 30)
        browser.get(f"http://127.0.0.1:{settings.gateway_port}/?api_key=screen-key")
        wait_for("the page to connect", lambda: text(browser, "#status") == "live", 30)
        wait_for("markets with consensus prices", lambda: "steam" in browser.page_source or len(
            browser.find_elements(By.CSS_SELECTOR, "#markets tbody tr")) > 0, 180)  # fmt: skip
        # the simulator's events counted from the source topics' offsets; the worker's records too
        for tile in ("#health-events", "#health-derived"):
            wait_for(f"a rate in {tile}", lambda t=tile: text(browser, t) not in ("-", "0"), 90)  # type: ignore[misc]

        def reading() -> tuple[str, str, str]:
            return text(browser, "#frames"), text(browser, "#markets tbody"), text(browser, "#health-events")

        first = reading()
        wait_for("the numbers to change", lambda: reading()[0] != first[0] and reading()[1] != first[1], 60)

        fingerprint = uuid.uuid4().hex
        now = int(time.time() * 1000)
        with EventProducer(settings) as producer:
            producer.publish("AlertChanged", {
                "event_id": str(uuid.uuid4()), "event_time": now, "source": "test",
                "fingerprint": fingerprint, "rule": "injected_by_test", "status": "firing",
                "severity": "critical", "value": 9.5,
                "labels": {"market_id": "m-test"}, "group_key": "injected_by_test", "starts_at": now,
                "signals": 1, "summary": f"injected alert {fingerprint[:8]}", "source_partition": 0,
            })  # fmt: skip
        row = f'#alerts tr[data-fingerprint="{fingerprint}"]'
        wait_for("the injected alert", lambda: len(browser.find_elements(By.CSS_SELECTOR, row)) == 1, 30)
        assert f"injected alert {fingerprint[:8]}" in text(browser, row) and "critical" in text(browser, row)
        screenshot = Path(
            os.environ.get("ODDSTREAM_DASHBOARD_SCREENSHOT", settings.data_dir / "dashboard.png")
        )
        assert browser.save_screenshot(str(screenshot))

        up.kill("gateway")  # `up` restarts it; the page reconnects and resumes from its positions
        wait_for("the page to see the gateway go", lambda: "disconnected" in text(browser, "#status"), 30)
        wait_for("the page to resume", lambda: text(browser, "#resume").startswith("resumed:"), 90)
        assert text(browser, "#status") == "live"
        assert len(browser.find_elements(By.CSS_SELECTOR, row)) == 1  # the alert is still shown
    finally:
        up.stop()
