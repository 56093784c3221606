"""A real headless Chromium for the tests of our HTML pages (Debian's chromium, driven by Playwright).

CI installs chromium and sets U2EVAL_REQUIRE_BROWSER, so there a page test fails instead of being skipped."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The flags a sandboxed machine without a network needs (no background calls, no GPU, no setuid sandbox).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


needs_browser = pytest.mark.skipif(
    chromium() is None and not os.environ.get("U2EVAL_REQUIRE_BROWSER"), reason="no chromium binary on PATH"
)


@contextmanager
def open_page(path: Path, width: int = 1280, height: int = 800) -> Iterator[object]:
    """The page at ``path`` (a file) in a headless Chromium window of that size, its scripts run."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    assert executable is not None, "chromium is not installed (CI installs it: .ci/run)"
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(path.as_uri())
            page.wait_for_function("document.body.dataset.rendered !== 'no'", timeout=30_000)
            yield page
        finally:
            browser.close()
