"""What the browser tests share: the system's headless Chromium (the
``browser`` fixture in tests/conftest.py launches it with ``headless_chromium``),
the mark that skips them without it, where they leave screenshots, and
signing up through the real form.

Without Chromium the tests are skipped with the reason, except on CI
(``CI=true``), where Chromium is installed and its absence fails them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.project import ROOT
from tests.support.stack import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.getenv("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ON_CI = os.getenv("CI") == "true"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not ON_CI,
    reason=f"Chromium not installed at {CHROMIUM} (apt-get install chromium)",
)

# What a headless run on a test machine needs: no sandbox (Chromium will not
# start one as root), no GPU, and none of the browser's own background traffic.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """The system's Chromium, headless, closed at the end; fails the test when
    it is missing (the tests that need it are skipped first unless on CI)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required on CI but was not found at {CHROMIUM}")
    # Loaded only by the tests that use a browser.
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the
    # database flush between tests is still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(LAUNCH_ARGS))
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def sign_up(browser: Browser, stack: Stack, username: str) -> tuple[BrowserContext, Page]:
    """A new browser context for a new user ``username``, who signed up through
    the form; its page is on the feed."""
    # Playwright's wait_for_function evaluates text, which the site's policy
    # forbids; the policy itself is checked in tests/security/test_http_security.py.
    context = browser.new_context(base_url=stack.base_url, bypass_csp=True)
    page = context.new_page()
    page.goto("/accounts/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "a-long-pass-phrase-9")
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    return context, page
