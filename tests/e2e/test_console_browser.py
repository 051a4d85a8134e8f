"""The console in a real browser: Debian's chromium, headless, driven through chromedriver
(Selenium) against `mxgate console` and a running gateway, through archive search, quarantine
release and dead-letter redrive. Screenshots land in test-artifacts/console/ (gitignored)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.test_operations import send_sample, settled
from tests.support import REPO, wait_for

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "test-artifacts" / "console"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromium-driver are missing: `make test` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="mxgate-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(30)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


def start_console(home: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mxgate",
            "console",
            "--port",
            "0",
            "--home",
            str(home),
            "--config",
            str(config),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for _ in range(3):
        line = process.stdout.readline()
        if "?token=" in line:
            return process, line.strip()
    process.kill()
    output = process.stdout.read()
    process.stdout.close()
    process.wait()
    raise AssertionError(f"the console did not start: {output}")


def status_of(url: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def text_of(browser: webdriver.Chrome, element_id: str) -> str:
    """The element's text once the page has it ("" until then, and while a new page replaces
    the one the element was found on)."""
    try:
        return str(browser.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def shot(browser: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_search_release_and_redrive_in_a_browser(gateway_factory, browser):
    gateway = gateway_factory()
    config = gateway.home.parent / f"config{gateway.home.name.removeprefix('home')}" / "local.yaml"
    refusal = gateway.home / "mailboxes" / "m365" / ".reply-carol@nutrition.co"
    refusal.parent.mkdir(parents=True, exist_ok=True)
    refusal.write_text("550 5.1.1 no such user\n")
    order = send_sample(gateway.smtp_port, "04-order")
    invoice = send_sample(gateway.smtp_port, "10-executable-attachment")
    lunch = send_sample(gateway.smtp_port, "02-m365-employee")
    for message_id in (order, invoice, lunch):
        wait_for(lambda m=message_id: settled(gateway.home, m, 1))
    assert settled(gateway.home, lunch, 1)[0].outcome.value == "dead_lettered"
    refusal.unlink()  # carol's mailbox is fixed: the redrive will get through

    console, url = start_console(gateway.home, config)
    try:
        base = url.split("/?", 1)[0]
        assert status_of(base + "/") == 403  # no page without the token
        assert status_of(base + "/quarantine") == 403
        assert status_of(base + "/?token=wrong") == 403
        assert status_of(url) == 303  # the token becomes a cookie

        browser.get(url)
        recent = browser.find_element(By.ID, "recent").text
        assert "Invoice 4471 overdue" in recent
        assert "quarantined" in recent
        shot(browser, "recent")

        browser.get(base + "/archive")
        box = browser.find_element(By.ID, "archive-query")
        box.send_keys("subject:order has:attachments")
        browser.find_element(By.ID, "archive-search").click()
        results = wait_for(lambda: text_of(browser, "archive-results"))
        assert "Order 2026-1187" in results
        shot(browser, "archive-search")

        browser.get(base + "/quarantine")
        browser.find_element(By.LINK_TEXT, "Invoice 4471 overdue").click()
        assert "executable-attachment" in browser.find_element(By.ID, "held").text
        browser.find_element(By.ID, "release").click()
        assert wait_for(lambda: "released to bob@nutrition.co" in text_of(browser, "notice"))
        shot(browser, "quarantine-released")
        bob = gateway.mailbox("workspace", "bob@nutrition.co")
        wait_for(lambda: list(bob.glob("*")) if bob.is_dir() else None)
        browser.find_element(By.ID, "release").click()  # a second release does nothing
        # the old page's notice stays until the new page comes: wait for the new one
        assert wait_for(lambda: "nothing to release" in text_of(browser, "notice"))

        browser.get(base + "/dead-letters")
        assert "550 5.1.1" in browser.find_element(By.ID, "dead-letters").text
        browser.find_element(By.CSS_SELECTOR, "button.redrive").click()
        assert wait_for(lambda: "redriven" in text_of(browser, "notice"))
        shot(browser, "dead-letter-redriven")
        carol = gateway.mailbox("m365", "carol@nutrition.co")
        wait_for(lambda: list(carol.glob("*")) if carol.is_dir() else None, timeout=30)

        browser.get(base + f"/messages/{lunch}")
        assert "delivered" in browser.find_element(By.TAG_NAME, "main").text
        browser.get(base + "/mailboxes/workspace/bob@nutrition.co")
        browser.find_element(By.LINK_TEXT, "Invoice 4471 overdue").click()
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "invoice-4471.exe" in page
        assert "Please open the attached invoice" in page
        shot(browser, "mailbox-letter")
        browser.get(base + "/")
        shot(browser, "recent-after")
    finally:
        console.terminate()
        console.wait(timeout=10)
        assert console.stdout is not None
        console.stdout.close()
