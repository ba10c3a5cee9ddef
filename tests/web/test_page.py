"""The web page in a real headless Chromium (Debian's, driven by Playwright): it shows every
task, a state change arrives by itself, the cancel button stops an agent, and without the
token the server refuses the page; an earlier run opens read-only from the list of runs.
Screenshots are kept in ``test-artifacts/``."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, poll, task

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("no chromium here (.ci/run installs it)", allow_module_level=True)
# No sandbox (we run as root); nothing Chromium would fetch on its own (this machine's closed
# network refuses it, many connections at a time, which stalls the tab on a loaded machine).
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps",
]  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_the_page_shows_the_run_and_its_cancel_button_stops_an_agent(fleet: Fleet) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "chromium is missing: .ci/run installs it"
    fleet.plan(
        task("slow", {"say": "working"}, {"sleep": 60}),
        task("after", deps=("slow",)),
        task("quick", {"sleep": 1}, {"say": "hello"}),
    )
    proc = fleet.start("run", "plan.yaml", "--no-live", "--web")
    err_log = fleet.logs / f"{len(fleet.procs)}.err"
    url = poll(
        lambda: (m := re.search(r"web: (http://\S+)", err_log.read_text())) and m[1],
        timeout=30,
        what="the web URL on stderr",
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            refused = page.goto(url.split("?")[0])
            assert refused is not None
            assert refused.status == 403
            page.goto(url)
            for tid in ("slow", "after", "quick"):
                page.wait_for_selector(f'tr[data-task="{tid}"]', timeout=30_000)
            page.wait_for_selector('tr[data-task="after"] .st.waiting', timeout=30_000)
            # a change the page was not asked for: quick ends on its own
            page.wait_for_selector('tr[data-task="quick"] .st.succeeded', timeout=30_000)
            page.on("dialog", lambda dialog: dialog.accept())
            page.click('button[data-cancel="slow"]', timeout=30_000)
            page.wait_for_selector('tr[data-task="slow"] .st.cancelled', timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
        finally:
            browser.close()
    done = fleet.finish(proc, timeout=60)
    assert done.code == 1  # slow was cancelled, so after was skipped
    assert "Traceback" not in done.text


def test_the_page_lists_past_runs_and_opens_one_read_only(fleet: Fleet) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "chromium is missing: .ci/run installs it"
    fleet.plan(task("old", {"say": "words of an earlier run"}), name="first")
    assert fleet.cli("run", "first.yaml", "--no-live").code == 0
    fleet.plan(task("new", {"say": "words of the latest run"}), name="second")
    assert fleet.cli("run", "second.yaml", "--no-live").code == 0
    proc = fleet.start("serve")
    out_log = fleet.logs / f"{len(fleet.procs)}.out"
    url = poll(
        lambda: (m := re.search(r" at (http://\S+)", out_log.read_text())) and m[1],
        timeout=30,
        what="the URL of serve",
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector('tr[data-task="new"] .st.succeeded', timeout=30_000)
            page.wait_for_selector("#runs tr.followed", timeout=30_000)
            assert "first" in page.inner_text("#runs tr:not(.followed)")
            page.click("#runs tr:not(.followed) a", timeout=30_000)
            page.wait_for_selector('tr[data-task="old"] .st.succeeded', timeout=30_000)
            assert "run=" in page.url
            assert page.is_hidden("#cancel-all")
            assert "read-only" in page.inner_text("#past")
            assert page.query_selector('tr[data-task="new"]') is None
            page.click('tr[data-task="old"] a.agent', timeout=30_000)
            page.wait_for_selector("#stream:has-text('words of an earlier run')", timeout=30_000)
            page.wait_for_selector("#svg svg", timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-page-past-run.png"), full_page=True)
            refused = page.goto(url.split("&")[0].split("?")[0] + "api/runs")
            assert refused is not None
            assert refused.status == 403
        finally:
            browser.close()
    proc.send_signal(signal.SIGTERM)
    fleet.finish(proc, timeout=30)
