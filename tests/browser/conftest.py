"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (`.ci/setup test` installs both), against the real `reminderd serve` (as a login role
granted reminderd_api) and the real `reminderd run` delivering to a local receiver.

Selenium is synchronous; the database, the receiver and the two processes live on an event loop
in a thread of their own (`Background`), which the tests call into and wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from support import TEST_SECRET, api_role_url, fast_daemon_env

from reminderd.testing import Receiver, add_api_key, add_tenant, api_listening_port, running_daemon

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SESSION_SECRET = "browser-tests-session-secret"
WIDE, PHONE = (1280, 900), (390, 844)
# Where the screenshots go: a temporary directory, or SCREENSHOTS_DIR (docs/ regenerates the README's).
SCREENSHOTS_DIR = os.environ.get("SCREENSHOTS_DIR")


class Background:
    """An event loop in a thread: `run(coroutine)` runs it there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="browser-tests-loop", daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T], timeout_s: float = 60) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Site:
    """What the tests drive: the dashboard's URL, the keys that sign in, and the world behind it."""

    url: str  # http://127.0.0.1:PORT/dashboard
    operator_key: str
    globex_key: str  # a tenant key of the other tenant, globex
    db: asyncpg.Connection
    receiver: Receiver
    background: Background

    def sql(self, query: str, *args: Any) -> Any:
        """Run SQL on the test's database connection; fetch's rows."""
        return self.background.run(self.db.fetch(query, *args))

    def value(self, query: str, *args: Any) -> Any:
        return self.background.run(self.db.fetchval(query, *args))


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    loop = Background()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def site(background: Background, module_database_url: str) -> Iterator[Site]:
    stack = contextlib.AsyncExitStack()

    async def start() -> Site:
        db = await asyncpg.connect(module_database_url)
        stack.push_async_callback(db.close)
        receiver = await Receiver(secret=TEST_SECRET).start()
        stack.push_async_callback(receiver.stop)
        await add_tenant(db, "acme", receiver.url, signing_secret=TEST_SECRET)
        await add_tenant(db, "globex", receiver.url, signing_secret=TEST_SECRET)
        operator = await add_api_key(db, None, name="ops-alice")
        globex = await add_api_key(db, "globex", name="globex-app")
        await stack.enter_async_context(running_daemon(fast_daemon_env(module_database_url)))
        serve_env = fast_daemon_env(await api_role_url(db, module_database_url), REMINDERD_API_PORT="0",
                                    REMINDERD_SESSION_SECRET=SESSION_SECRET)
        serve = await stack.enter_async_context(running_daemon(serve_env, command="serve"))
        port = await api_listening_port(serve)
        return Site(f"http://127.0.0.1:{port}/dashboard", operator, globex, db, receiver, background)

    try:
        yield background.run(start())
    finally:
        background.run(stack.aclose())


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: `bash .ci/setup test` installs them "
                    "(make test does)")
    profile = tempfile.mkdtemp(prefix="reminderd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--disable-extensions", f"--window-size={WIDE[0]},{WIDE[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """The module's browser, signed out and at the wide size before each test."""
    chromium.delete_all_cookies()
    chromium.set_window_size(*WIDE)
    yield chromium


def sign_in(driver: WebDriver, site: Site, key: str) -> None:
    driver.get(site.url + "/login")
    driver.find_element(By.NAME, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "header .who"))


def screenshot_dir() -> Path:
    target = Path(SCREENSHOTS_DIR) if SCREENSHOTS_DIR else Path(tempfile.gettempdir()) / "reminderd-screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target
