"""Playwright (sync API) driving Debian's Chromium against pytest-django's
live server on the real PostgreSQL test database.

Playwright's sync API runs an asyncio loop in this thread, which Django's
async-safety check would take for an async context; the ORM calls made here
are plain synchronous ones, hence ``DJANGO_ALLOW_ASYNC_UNSAFE``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "crowdlab-pass-123"  # tests.platform.factories.DEFAULT_PASSWORD

# "Run now" sends a Celery message after commit. It goes to the session's queue
# that no worker consumes (``live_tasks_queue`` in tests/conftest.py); the test
# plays the worker by executing the run in-process (see test_requester.py).


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium` (see .ci/run).")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Every page records what the Content-Security-Policy refused (Playwright's
# init scripts run outside the page's CSP); ``csp_violations(page)`` reads it.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def csp_violations(page: Page) -> list[str]:
    return page.evaluate("window.__cspViolations || []")


# Chromium's console line for a refusal quotes the directive: a refused script
# or style means the page's own code broke under the policy. (Images are left
# out: the ReDoc page's own policy refuses its vendor's logo on purpose.)
_CODE_REFUSAL = re.compile(r"Content Security Policy directive:? [\"'](script|style|default|worker)-src")


def watch_csp(page: Page, refused: list[str]) -> None:
    """Record the page's CSP refusals: all of them in the page (per document,
    ``csp_violations``), and refused scripts and styles from the console into
    ``refused`` (across navigations)."""
    page.add_init_script(CSP_RECORDER)
    page.on("console", lambda message: refused.append(message.text) if _CODE_REFUSAL.search(message.text) else None)


@pytest.fixture
def new_page(browser: Browser, live_server: Any) -> Iterator[Callable[..., Page]]:
    """``new_page(user=None, **context_options)`` → a page in a fresh context,
    logged in as ``user`` through the login form when given.

    Every page works under crowdlab's Content-Security-Policy: a test whose
    pages had a script or style refused by it (inline code, a foreign file)
    fails at teardown, with what was refused."""
    contexts: list[BrowserContext] = []
    refused: list[str] = []

    def make(user: Any | None = None, **options: Any) -> Page:
        context = browser.new_context(base_url=live_server.url, accept_downloads=True, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        watch_csp(page, refused)
        if user is not None:
            login(page, user.username)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not refused, "The Content-Security-Policy refused:\n" + "\n".join(refused)


def login(page: Page, username: str) -> None:
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/")


def no_horizontal_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))
