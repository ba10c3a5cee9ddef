"""Tasks added while a run goes on: `orchestrator add` from inside an agent and from another
terminal, against real `orchestrator run` processes (the control socket, peer credentials,
the journal)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, poll, task

from orchestrator import ids
from orchestrator.records.journal import load

# Each agent adds two tasks of its own kind (so they run this same command), forever.
RUNAWAY = (
    "python -m orchestrator add $ORCHESTRATOR_AGENT_ID-a --prompt more --json; "
    "python -m orchestrator add $ORCHESTRATOR_AGENT_ID-b --prompt more --json; true"
)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def runaway(tid: str, **kw: Any) -> dict[str, Any]:
    return {"id": tid, "agent": "command", "command": RUNAWAY, **kw}


def test_a_runaway_adder_is_stopped_at_max_agents_and_the_run_ends_normally(fleet: Fleet) -> None:
    fleet.plan(runaway("root"), limits={"max_agents": 7, "max_depth": 50, "max_concurrency": 3})
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 0, done.text
    journal = fleet.journal()
    started = [a for a, rec in journal.agents.items() if rec.get("role") != "build"]
    assert len(started) <= 7
    assert all(rec.get("state") == "succeeded" for rec in journal.agents.values())
    added = [t for t, rec in journal.tasks.items() if rec.get("added")]
    assert len(added) == 6  # max_agents counts the root and every task waiting to start
    refusals = []
    for agent in started:
        text = (fleet.cwd / "agent-responses" / f"{agent}.md").read_text()
        refusals += [line for line in text.splitlines() if "add refused:" in line]
        assert ('"rule": "max_agents"' in text) == ("add refused:" in text)
    assert refusals, "the refusals are in the adders' progress files"
    assert all("[max_agents]" in line for line in refusals)


def test_an_added_task_runs_one_deeper_than_its_adder_and_max_depth_stops_it(fleet: Fleet) -> None:
    fleet.plan(runaway("root"), limits={"max_agents": 50, "max_depth": 2, "max_concurrency": 4})
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 0, done.text
    journal = fleet.journal()
    depths = {a: rec.get("depth") for a, rec in journal.agents.items()}
    assert depths["root"] == 0
    assert depths["root-a"] == 1
    assert depths["root-a-b"] == 2
    assert len(depths) == 7  # 1 + 2 + 4: depth 3 is past max_depth
    assert journal.agents["root-a-b"]["parent"] == "root-a"
    text = (fleet.cwd / "agent-responses" / "root-a-b.md").read_text()
    assert "[max_depth]" in text
    # every view shows who added a task
    status = fleet.cli("status")
    assert "root-a-b (added by root-a)" in status.out, status.text
    report = (fleet.responses / "REPORT.md").read_text()
    assert "| [root-a-b](root-a-b.md) | task | succeeded | root-a |" in report
    assert "root-a-b (by root-a)" in (fleet.responses / "timeline.svg").read_text()
    from orchestrator.view import board, snapshot

    rows = board.task_rows(snapshot.from_journal(fleet.journal(), alive=False))
    by_id = {r["id"]: r for r in rows}
    assert next(iter(by_id)) == "root"
    assert by_id["root-a-b"]["added_by"] == "root-a"
    assert by_id["root-a-b"]["depends_on"] == []
    assert by_id["root"]["added_by"] is None


def test_a_person_adds_tasks_to_a_kept_open_run_until_it_is_cancelled(fleet: Fleet) -> None:
    fleet.plan(task("first"), limits={"max_agents": 5})
    run = fleet.start("run", "plan.yaml", "--no-live", "--keep-open")
    poll(lambda: fleet.journal().tasks.get("first", {}).get("state") == "succeeded",
         what="the plan's own task")  # fmt: skip
    added = fleet.cli("add", "second", "--prompt", "hello", "--after", "first", "--json")
    assert added.code == 0, added.text
    assert json.loads(added.out) == {"ok": True, "added": "second", "depth": 0, "parent": None}
    poll(lambda: fleet.journal().tasks.get("second", {}).get("state") == "succeeded",
         what="the added task")  # fmt: skip
    bad = fleet.cli("add", "third", "--after", "nothing")
    assert bad.code == 1, bad.text
    assert "[unknown-dependency]" in bad.out
    cycle = fleet.cli("add", "third", "--after", "third")
    assert cycle.code == 1, cycle.text
    assert "[cycle]" in cycle.out
    taken = fleet.cli("add", "second")
    assert taken.code == 1, taken.text
    assert "[duplicate-id]" in taken.out
    assert run.poll() is None, "a kept-open run waits for more"
    fleet.cli("cancel", "--all")
    ended = fleet.finish(run)
    assert ended.code == 0, ended.text  # every task succeeded; cancel only closed it
    journal = load(fleet.cwd / "agent-responses" / ".run" / "journal.jsonl")
    assert journal.run["state"] == "finished"
    assert journal.tasks["second"]["added"] == 1
    assert journal.tasks["second"]["depends_on"] == ["first"]


def prompted(tid: str, prompt: str) -> dict[str, Any]:
    """A command task that runs its prompt (so a task it adds runs the prompt it is given)."""
    return {"id": tid, "agent": "command", "command": "sh -c {prompt}", "prompt": prompt}


def test_resume_keeps_the_tasks_added_during_the_run_and_runs_the_failed_ones_again(
    fleet: Fleet,
) -> None:
    fleet.plan(prompted("root", "python -m orchestrator add child --prompt 'test -f ok'"))
    first = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert first.code == 1, first.text
    assert fleet.journal().tasks["child"]["state"] == "failed"
    (fleet.workspace / "ok").write_text("")
    again = fleet.cli("run", "plan.yaml", "--no-live", "--resume", timeout=60)
    assert again.code == 0, again.text
    assert "1 task(s) added during the run kept: child" in again.err
    journal = fleet.journal()
    assert journal.tasks["child"]["state"] == "succeeded"
    again_id = ids.agent_id_of("child", 2)
    assert journal.agents[again_id]["parent"] == "root"  # its adder, though root is not re-run
    assert journal.agents[again_id]["depth"] == 1
    assert ids.agent_id_of("root", 2) not in journal.agents


def test_nothing_is_added_once_the_final_build_check_has_started(fleet: Fleet) -> None:
    late = "python -m orchestrator add late --prompt x; true"
    fleet.plan(task("only"), build={"command": late, "max_fix_cycles": 0})
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 0, done.text
    assert "late" not in fleet.journal().tasks
    said = (fleet.responses / f"{ids.build_id(1)}.md").read_text()
    assert "[closing]" in said
    assert "add refused: " in said
