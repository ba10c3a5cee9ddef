"""What ``run --no-live`` prints: the story of the run, one line per thing said."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, quiet_env
from fakeapi import serve_in_thread, text

from orchestrator.engine.state import AgentRecord
from orchestrator.events import Finished, Output, Text, Usage
from orchestrator.view.console import PlainPrinter

KEY = "sk-ant-canary-console-0123456789"


def record(agent_id: str) -> AgentRecord:
    return AgentRecord(agent_id, agent_id, "claude", "task", 1, 0, None)


async def test_streamed_words_are_printed_once_per_line_not_once_per_chunk() -> None:
    out = io.StringIO()
    show = PlainPrinter(out)
    a, b = record("a"), record("b")
    for chunk in ("Ten words ", "in one ", "sentence.\nAnd ", "a sec"):
        show(a, "(the growing line)", Text(chunk))
    show(b, "| command output", Output("command output"))  # stays in the progress file
    show(a, "finished: done", Finished("done"))  # ends the open line first
    show(a, "status: succeeded", None)
    show.flush()
    assert out.getvalue().splitlines(keepends=True) == [
        f"{'a':>16} | Ten words in one sentence.\n",
        f"{'a':>16} | And a sec\n",
        f"{'a':>16} | finished: done\n",
        f"{'a':>16} | status: succeeded\n",
    ]


async def test_a_usage_report_mid_line_is_printed_before_it_and_does_not_end_it() -> None:
    """The gateway reports a request's usage from its own thread: under load that report
    can arrive while the agent's streamed line is still growing. It goes before the line
    (as in the progress file), never cuts it in two."""
    out = io.StringIO()
    show = PlainPrinter(out)
    a = record("a")
    show(a, "(the growing line)", Text("one two "))
    show(a, "usage: 12 in / 0 out tokens, $0.0001", Usage(12, 0, 0.0001))
    show(a, "(the growing line)", Text("three four\n"))
    show.flush()
    assert out.getvalue().splitlines() == [
        f"{'a':>16} | usage: 12 in / 0 out tokens, $0.0001",
        f"{'a':>16} | one two three four",
    ]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_run_no_live_prints_a_streaming_agents_sentence_once(fleet: Fleet) -> None:
    sentence = "one two three four five six seven eight nine ten"
    with serve_in_thread(
        lambda body, i: text(sentence).with_trickle(0, chunk=4), api_key=KEY
    ) as api:
        fleet.plan({"id": "a", "agent": "claude", "prompt": "Say ten words."})
        env = quiet_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.url)
        done = fleet.cli("run", "plan.yaml", "--no-live", env=env, timeout=60)
    assert done.code == 0, done.text
    said = [line for line in done.out.splitlines() if line.endswith(f"| {sentence}")]
    assert said == [f"{'a':>16} | {sentence}"]
