"""Playwright driving Debian's headless Chromium (/usr/bin/chromium, installed by ``./dev test`` when missing:
scripts/browser.sh). One browser per test module; each test gets a fresh context (no shared storage or cookies).
And the modules' shared clock: ``month_travel`` (their worlds start a little before a month boundary)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session", autouse=True)
def _patient_expectations() -> None:
    """Pages read the API as they render; on a busy 2-core machine that can take seconds: expect() waits up to 15 s."""
    from playwright.sync_api import expect  # noqa: PLC0415

    expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run ./dev test (it installs Debian's chromium) or apt-get install chromium"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from page_in(browser, "UTC")


@pytest.fixture
def new_york_page(browser: Any) -> Iterator[Any]:
    """A page in a US browser (America/New_York, UTC-5 in winter): where an instant's local day is not its UTC day."""
    yield from page_in(browser, "America/New_York")


def page_in(browser: Any, timezone_id: str, **options: Any) -> Iterator[Any]:
    """A page in a new browser context (``options``: more of Playwright's context options); fails the test if the
    page threw."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id=timezone_id, **options
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"the page threw: {errors}"


def month_start(instant: float) -> datetime:
    """The first instant of the UTC month holding ``instant`` (epoch s)."""
    day = datetime.fromtimestamp(instant, tz=UTC)
    return datetime(day.year, day.month, 1, tzinfo=UTC)


@contextlib.contextmanager
def month_travel(hours: float) -> Iterator[None]:
    """Time is chosen, not read off the calendar: when the current month began less than ``hours`` ago (too recently
    for what the module simulates and closes before now), the process runs as of 2 h before that month's start, the
    clock ticking on (time_machine); otherwise on the real clock. Either way the last month boundary is at least
    ``hours`` - 2 h in the past."""
    import time_machine  # noqa: PLC0415

    real = time.time()
    begun = month_start(real)
    if real - begun.timestamp() >= hours * 3600:
        yield
        return
    with time_machine.travel(begun - timedelta(hours=2), tick=True):
        yield
