"""Limits across nested runs: real `orchestrator run` processes started by agents of a run.

A top plan's command tasks start nested orchestrators (each with its own ``--responses``);
what every run started is read back from each journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, poll, quiet_env, write_plan
from conftest import processes_with_marker
from fakeapi import serve_in_thread, text

from orchestrator.control import quota
from orchestrator.errors import EnvironmentProblem
from orchestrator.records.journal import JournalState, load

NESTED = "python -m orchestrator run {plan} --no-live --responses {out}"
OPEN = {"writable": ["."]}
"""Nested runs write their responses beside the plans, outside the workspace: the plan says so."""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def nested(tid: str, plan: str, out: str, **kw: Any) -> dict[str, Any]:
    """A task whose agent is an orchestrator running ``plan`` into ``out``."""
    command = NESTED.format(plan=f"../{plan}", out=f"../{out}")
    return {"id": tid, "agent": "command", "command": command, **kw}


def plan(fleet: Fleet, *tasks: dict[str, Any], **top: Any) -> Path:
    return fleet.plan(*tasks, sandbox=OPEN, **top)


def quick(tid: str) -> dict[str, Any]:
    return {"id": tid, "agent": "scripted", "script": [{"say": tid}]}


def journal_of(fleet: Fleet, out: str) -> JournalState:
    return load(fleet.cwd / out / ".run" / "journal.jsonl")


def started(state: JournalState) -> list[str]:
    return [a for a, rec in state.agents.items() if rec.get("role") != "build"]


def test_a_nested_run_cannot_raise_the_max_depth_it_inherited(fleet: Fleet) -> None:
    write_plan(fleet.cwd / "leaf.yaml", [quick("leaf")], limits={"max_depth": 6})
    write_plan(
        fleet.cwd / "mid.yaml",
        [nested("go-deeper", "leaf.yaml", "r-leaf")],
        sandbox=OPEN,
        limits={"max_depth": 6},
    )
    plan(fleet, nested("mid", "mid.yaml", "r-mid"), limits={"max_depth": 1})
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 1, done.text
    mid = journal_of(fleet, "r-mid")
    assert mid.agents["go-deeper"]["state"] == "failed"
    said = (fleet.cwd / "r-mid" / "go-deeper.md").read_text()
    assert "nested orchestrator at depth 2 is past max_depth=1" in said
    assert not (fleet.cwd / "r-leaf" / ".run" / "journal.jsonl").exists(), "nothing started"


def test_nested_runs_share_the_top_run_s_max_agents(fleet: Fleet) -> None:
    inner = [quick(f"i{n}") for n in range(3)]
    write_plan(fleet.cwd / "inner.yaml", inner, limits={"max_agents": 10})
    plan(fleet,
        *(nested(f"n{n}", "inner.yaml", f"r{n}") for n in range(3)),
        limits={"max_agents": 5, "max_concurrency": 3},
    )
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 1, done.text  # some nested runs got nothing left to start with
    top = fleet.journal()
    counts = {out: len(started(journal_of(fleet, out))) for out in ("r0", "r1", "r2")
              if (fleet.cwd / out / ".run" / "journal.jsonl").exists()}  # fmt: skip
    assert len(started(top)) + sum(counts.values()) <= 5, counts
    assert sum(counts.values()) == 2, "the two agents the top left were lent and used"
    said = {n: (fleet.responses / f"{n}.md").read_text() for n in ("n0", "n1", "n2")}
    refused = [n for n, text in said.items() if "exit code 3" in text]
    assert len(refused) == 2, "the nested runs that found nothing left did not start"
    for n in refused:
        assert "no agents left to lend (its max_agents=5 counts every nested run)" in said[n]
    (lent,) = counts.values()
    assert lent == 2


def test_a_nested_run_gives_back_what_it_did_not_use(fleet: Fleet) -> None:
    write_plan(fleet.cwd / "inner.yaml", [quick("only")])
    plan(fleet,
        *(nested(f"n{n}", "inner.yaml", f"r{n}") for n in range(3)),
        limits={"max_agents": 6, "max_concurrency": 1, "max_depth": 1},
    )
    # Each nested run asks for what its plan could use (3: an attempt, a fixer, a retry) and
    # starts one: without giving back, the third would find nothing left.
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    for out in ("r0", "r1", "r2"):
        state = journal_of(fleet, out)
        assert state.tasks["only"]["state"] == "succeeded"
        assert state.run["budget_usd"] is None


def test_stopping_the_top_run_stops_what_its_nested_runs_started(fleet: Fleet) -> None:
    escaper = "setsid sh -c \"trap '' TERM; sleep 30\" & trap '' TERM; echo up; sleep 30"
    write_plan(
        fleet.cwd / "inner.yaml",
        [{"id": "deep", "agent": "scripted", "script": [{"run": escaper}]}],
        limits={"grace": 30},
    )
    plan(fleet, nested("inner", "inner.yaml", "r-inner"), limits={"grace": 0.2})
    run = fleet.start("run", "plan.yaml", "--no-live")
    deep = fleet.cwd / "r-inner" / "deep.md"
    poll(lambda: deep.exists() and "| up" in deep.read_text(), what="the nested agent")
    inner_id = poll(lambda: journal_of(fleet, "r-inner").run.get("run_id"), what="its run id")
    assert len(processes_with_marker(inner_id)) >= 3
    assert fleet.call("cancel", "--all").code == 0
    assert fleet.finish(run, timeout=15).code == 1  # the top's grace, not the nested run's 30 s
    poll(lambda: not processes_with_marker(inner_id), timeout=5, what="the nested leftovers")


def test_the_lease_protocol_is_for_agents_of_the_run_only(fleet: Fleet) -> None:
    plan(fleet,
        {"id": "spy", "agent": "command",
         "command": "echo $ORCHESTRATOR_QUOTA $ORCHESTRATOR_QUOTA_TOKEN; "
                    "while [ ! -e go ]; do sleep 0.02; done"},
        limits={"max_agents": 3, "budget_usd": 1.0},
    )  # fmt: skip
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("spy")
    md = fleet.responses / "spy.md"
    line = next(ln for ln in _poll_lines(md) if "control.sock" in ln)
    socket, token = line.split("| ", 1)[1].split()
    parent = quota.Parent(Path(socket), token)
    with pytest.raises(EnvironmentProblem, match="not an agent of this run"):
        quota.Parent(Path(socket), "wrong").lease(1)
    lease = parent.lease(5)
    assert (lease.granted, lease.parent_max_agents) == (2, 3), "3 minus the spy itself"
    assert lease.budget_left == 1.0
    assert parent.lease(1).granted == 0
    parent.release(2)
    assert parent.lease(1).granted == 1
    parent.charge(1.5)
    asyncio.run(parent.flush())
    (fleet.workspace / "go").touch()
    assert fleet.finish(run).code == 1
    top = fleet.journal()
    assert top.agents["spy"]["state"] == "budget_exceeded", "a nested run's cost counts here"
    assert top.run["spent_usd"] == 1.5


def _poll_lines(path: Path) -> list[str]:
    return poll(
        lambda: [ln for ln in path.read_text().splitlines() if "control.sock" in ln],
        what="the exported socket",
    )


def test_a_nested_run_spends_from_the_top_run_s_budget(fleet: Fleet) -> None:
    costly = text("done", input_tokens=100_000, output_tokens=0)  # $0.10 at $1 per Mtok
    with serve_in_thread(default=costly) as api:
        inner = [
            {"id": f"c{n}", "agent": "claude", "prompt": "say done", "model": "claude-sonnet-4-6"}
            for n in range(4)
        ]
        write_plan(
            fleet.cwd / "inner.yaml",
            inner,
            limits={"max_concurrency": 1, "budget_usd": 5.0},
            prices={"claude-sonnet-4-6": {"input": 1.0, "output": 1.0}},
        )
        # pass_env names the key: the nested orchestrator gets a gateway token in its place
        top_task = nested("inner", "inner.yaml", "r-inner", pass_env=["ANTHROPIC_API_KEY"])
        plan(fleet, top_task, limits={"budget_usd": 0.25})
        env = {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": api.url}
        done = fleet.cli("run", "plan.yaml", "--no-live", env=_with(env))
    inner_state = journal_of(fleet, "r-inner")
    assert inner_state.run["budget_usd"] == pytest.approx(0.25), "the top's budget left binds"
    top = fleet.journal()
    spent = float(top.run["spent_usd"])  # the top's gateway metered every request of the tree
    assert spent <= 0.25 + 0.10 + 1e-9, "at most one request beyond the shared budget"
    assert "budget of $0.25 spent" in str(top.run["fence"])
    assert done.code == 1
    done_inner = [t for t, r in inner_state.tasks.items() if r.get("state") == "succeeded"]
    assert len(done_inner) < 4, "the shared budget was spent before every task could run"


def _with(extra: dict[str, str]) -> dict[str, str]:
    return quiet_env(**extra)
