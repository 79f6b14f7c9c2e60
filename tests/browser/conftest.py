"""Browser fixtures: the live app, one headless Chromium per worker, a fresh context per test.

Every test marked `browser` joins the xdist group "browser" (tests/conftest.py), so that one
xdist worker runs them all (`--dist loadgroup`), one after another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.core.helpers import fast_password_hashing
from tests.live_server import LiveServer, running_server

CHROMIUM = os.environ.get("JAEJIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Where screenshots go; set JAEJIN_SCREENSHOT_DIR to keep them for review.
SCREENSHOT_DIR_VARIABLE = "JAEJIN_SCREENSHOT_DIR"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

ContextFactory = Callable[..., BrowserContext]

# Deadlines, not delays (Playwright acts as soon as the page is ready): a shared two-core
# machine under load can take far longer than Playwright's 5 s default to render.
BROWSER_DEADLINE_MS = 30_000
expect.set_options(timeout=BROWSER_DEADLINE_MS)


@pytest.fixture(scope="module", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """Sign-ins in the browser verify and upgrade password hashes for real, with cheap argon2id
    parameters (the live server runs in this process; production's are proved in test_accounts)."""
    with fast_password_hashing():
        yield


@pytest.fixture(scope="session")
def live_server(app: Any) -> Iterator[LiveServer]:
    with running_server(app) as server:
        yield server


# Package scope, not session: while the sync API runs, this thread has a running asyncio loop,
# and any later test on the same worker that calls asyncio.run() would fail.
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (run `make system-deps`)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                 headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def new_context(browser: Browser, live_server: LiveServer) -> Iterator[ContextFactory]:
    """Open browser contexts (each its own cookies) with a locale and time zone of choice."""
    opened: list[BrowserContext] = []

    def open_context(locale: str = "en-US", timezone_id: str = "Asia/Seoul",
                     viewport: dict[str, int] | None = None) -> BrowserContext:
        context = browser.new_context(base_url=live_server.url, locale=locale,
                                      timezone_id=timezone_id, viewport=viewport or DESKTOP)
        context.set_default_timeout(BROWSER_DEADLINE_MS)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()


@pytest.fixture
def page(new_context: ContextFactory) -> Page:
    return new_context().new_page()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def screenshot(screenshot_dir: Path) -> Callable[[Page, str], Path]:
    def take(target: Page, name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        target.screenshot(path=str(path), full_page=True)
        return path

    return take
