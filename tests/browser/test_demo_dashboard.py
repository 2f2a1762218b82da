"""``./dev demo --keep-running`` serves the dashboard: after the run it prints the dashboard's URL and a sign-in link
per chosen account; a link signs the browser in and the page shows that account's month; Ctrl-C stops everything,
the dashboard's port included. The demo runs as a child process (tests/e2e's ``Demo``: every wait has a deadline,
and the process is stopped by PID whatever happens)."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_local_stack import Demo, _port_open

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def demo() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for process in started:
        process.kill()


def test_given_the_demo_kept_running_then_it_serves_the_dashboard_with_working_sign_in_links(
    demo: list[Demo], page: Any
) -> None:
    run = Demo("--accounts", "2", "--keep-running")
    demo.append(run)
    site = run.wait_for(r"The dashboard: (http://127\.0\.0\.1:(\d+))/", 600)
    url, port = site.group(1), int(site.group(2))
    links = {}
    for account in ("acct-personal-01", "acct-team-01"):
        found = run.wait_for(rf"^\s+{account}\s+({re.escape(url)}/#token=[\w.-]+)\s*$", 30)
        links[account] = found.group(1)
    with urllib.request.urlopen(f"{url}/config.json", timeout=10) as response:
        assert json.loads(response.read())["auth"]["mode"] == "local"
    page.goto(links["acct-team-01"])
    expect(page.get_by_role("heading", name=re.compile(r"^Usage for \d{4}-\d{2}$"))).to_be_visible()
    expect(page.get_by_text("acct-team-01 · owner")).to_be_visible()
    expect(page.get_by_test_id("fees")).to_have_text("$29.00")  # Team, a whole month: signed up before it began
    run.process.send_signal(signal.SIGINT)
    code, output = run.finish(90)
    assert code == 130, output
    assert not _port_open(port)  # the dashboard stopped with the stack
