"""What plans, agents and builds say is data on every view: never Rich markup, never control.

A plan named ``[/]`` or an agent whose last line is ``[/]`` used to crash the end of `run`,
`status`, `watch` and the live view with Rich's ``MarkupError``; escape sequences reached the
terminal and REPORT.md. Here every view renders a snapshot full of such words, and the real
commands run a plan made of them, on a pseudo-terminal for the live view.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import ORCH, Fleet, quiet_env, task
from rich.console import Console

from orchestrator.view import dashboard, report
from orchestrator.view.snapshot import Snapshot

MARKUP = ["[/]", "[bold red]x[/bold red]", "[link=http://x.invalid]y", "[/link]", ":smile:"]
CONTROL = "\x1b]0;title\x07\x1b[2J\x1b[31m\u202eevil\x9b31m\rbell\x07"
HOSTILE = " ".join(MARKUP) + CONTROL + "\nstatus: succeeded"


def hostile_snapshot() -> Snapshot:
    agent = {
        "id": "a", "task": "a", "kind": "scripted", "state": "failed", "started": 1.0,
        "ended": 2.0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "role": "task",
        "parent": HOSTILE, "last_line": HOSTILE, "reason": HOSTILE,
    }  # fmt: skip
    return Snapshot(
        run={"plan": "[/]" + CONTROL, "state": "finished", "run_id": HOSTILE},
        agents=(agent,),
        tasks=({"id": "a", "state": "failed", "attempts": ["a"], "fixers": [HOSTILE],
                "reason": HOSTILE},),
        fence=HOSTILE,
        extra={
            "build": HOSTILE,
            "escalations": [{"task": HOSTILE, "blocker": HOSTILE, "tried": [HOSTILE],
                             "reason": HOSTILE, "next_step": HOSTILE, "files": [HOSTILE]}],
        },
    )  # fmt: skip


def shown(renderable: object) -> str:
    console = Console(width=400, record=True, force_terminal=True, color_system="truecolor")
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("view", ["render", "summary"])
def test_terminal_views_show_markup_as_text_and_drop_control(view: str) -> None:
    text = shown(getattr(dashboard, view)(hostile_snapshot()))
    assert "[/]" in text
    assert "[bold red]x[/bold red]" in text
    assert ":smile:" in text
    for ch in "\x1b\x07\x9b\u202e\r":
        assert ch not in text


def test_report_keeps_hostile_words_inside_their_lines() -> None:
    text = report.render(hostile_snapshot())
    for ch in "\x1b\x07\x9b\u202e\r":
        assert ch not in text
    assert not any(line.startswith("status:") for line in text.split("\n"))
    assert "# Report: [/]" in text
    rows = [line for line in text.split("\n") if line.startswith("| ")]
    cells = {row.split(" ")[1]: len(re.findall(r"(?<!\\)\|", row)) for row in rows}
    assert cells == {"task": 9, "a": 9, "agent": 6, "[a](a.md)": 6}, rows


# --- the real commands ------------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def read_pty_until_exit(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    screen = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    return bytes(screen)


@pytest.mark.timeout(60)
def test_a_plan_and_an_agent_speaking_markup_run_and_report_cleanly(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"say": "[bold]starts[/bold]"}, {"say": "[/]"}),
        task("b", {"say": "\x1b]0;title\x07[/]"}, deps=("a",)),
        name="plan",
    )
    plan = fleet.cwd / "plan.yaml"
    plan.write_text(plan.read_text().replace("name: plan", "name: '[/]'"))

    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    assert "Traceback" not in done.text
    assert "MarkupError" not in done.text
    assert "[/]" in done.out
    for command in (("status",), ("watch",)):
        shown = fleet.cli(*command, timeout=20)
        assert shown.code == 0, shown.text
        assert "[/]" in shown.out
        assert "\x1b]0;" not in shown.out

    # The live view, on a terminal: its first frame already carries the plan's name.
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*ORCH, "run", "plan.yaml"],
        cwd=fleet.cwd,
        env=quiet_env(COLUMNS="140", LINES="40", TERM="xterm"),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        screen = read_pty_until_exit(primary, proc, timeout=40).decode(errors="replace")
        assert proc.wait(timeout=10) == 0, screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert "Traceback" not in screen
    assert "orchestrator - [/]" in screen
    assert "\x1b]0;title" not in screen
