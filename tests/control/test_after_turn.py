"""``cancel AGENT --after-turn``: the model's answer in flight finishes, then the agent stops.

A real background ``orchestrator run`` of claude agents against the fake Messages API (in a
thread of this process); the cancel goes through the control socket to the run, and from
the run to its model gateway, which refuses the agent's next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, poll, quiet_env, task
from fakeapi import Reply, serve_in_thread, tool_use

KEY = "sk-ant-canary-after-turn-0123456789"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def claude_task(tid: str) -> dict[str, Any]:
    return {"id": tid, "agent": "claude", "prompt": "Write notes.txt, then keep going."}


def test_after_turn_lets_the_answer_finish_its_tools_run_and_then_the_agent_stops(
    fleet: Fleet,
) -> None:
    def respond(body: dict[str, Any], index: int) -> Reply:
        # A slow answer whose tool call writes a file; any later turn would list files.
        turn = len(body["messages"]) // 2
        if turn == 0:
            write = tool_use("write_file", {"path": "notes.txt", "content": "partial work\n"})
            return write.with_trickle(0.1, chunk=4)
        return tool_use("list_files", {})

    with serve_in_thread(respond, api_key=KEY) as api:
        fleet.plan(claude_task("a"))
        env = quiet_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.url)
        run = fleet.start("run", "plan.yaml", "--no-live", env=env)
        poll(lambda: len(api.requests) >= 1, timeout=30, what="the first request")
        done = fleet.call("cancel", "a", "--after-turn")
        assert (done.code, done.out) == (0, "stopping after their turn: a\n")
        assert fleet.finish(run, timeout=60).code == 1
        requests = list(api.requests)

    agent = fleet.journal().agents["a"]
    assert agent["state"] == "cancelled"
    assert agent["reason"] == "cancelled after its turn (cancel --after-turn)"
    assert (fleet.workspace / "notes.txt").read_text() == "partial work\n"  # kept
    assert len(requests) == 1  # its next request never left the gateway
    md = (fleet.responses / "a.md").read_text()
    assert "-> write_file: notes.txt" in md
    assert md.rstrip().splitlines()[-1].startswith("status: cancelled")


def test_after_turn_stops_an_agent_without_a_model_at_once(fleet: Fleet) -> None:
    fleet.plan(task("s", {"run": "echo up; sleep 30"}))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("s")
    done = fleet.call("cancel", "s", "--after-turn")
    assert (done.code, done.out) == (0, "stopping after their turn: s\n")
    assert fleet.finish(run).code == 1
    assert fleet.journal().agents["s"]["state"] == "cancelled"


@pytest.mark.parametrize("extra", ["--all", "--tree", "--force"])
def test_after_turn_names_agents_only(fleet: Fleet, extra: str) -> None:
    args = ("cancel", "--after-turn", extra) + (() if extra == "--all" else ("a",))
    done = fleet.call(*args)
    assert done.code == 2
    assert "--after-turn" in done.err
