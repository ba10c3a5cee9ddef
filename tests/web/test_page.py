"""The web page in a real headless Chromium (Debian's, driven by Playwright): it shows every
task, a state change arrives by itself, the cancel button stops an agent, and without the
token the server refuses the page. A screenshot is kept in ``test-artifacts/``."""

from __future__ import annotations

import os
import re
import shutil
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
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
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
