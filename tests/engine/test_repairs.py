"""Blockers, fixers, retries, builds and escalation, end to end with scripted agents.

The decision table itself is in test_recovery.py; here the scheduler carries the decisions
out with real processes, real files and a real pytest build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from clirun import Fleet, task
from conftest import scripted

from orchestrator.engine.scheduler import Run
from orchestrator.plan.load import load_plan
from orchestrator.plan.model import Block, Build, Fail, FixerSpec, Say, Sleep, Task, Write
from orchestrator.plan.model import Run as RunStep
from orchestrator.preflight import check_environment
from orchestrator.runner import RunOptions, run_plan

MakeRun = Callable[..., Run]
ROOT = Path(__file__).resolve().parents[2]


def with_fixer(run: Run, *steps: object, build: Build | None = None) -> Run:
    """The same run with a scripted fixer (and optionally a build) in its plan."""
    plan = dataclasses.replace(
        run.plan,
        fixer=FixerSpec(agent="scripted", script=tuple(steps)),  # type: ignore[arg-type]
    )
    if build is not None:
        plan = dataclasses.replace(plan, build=build)
    return Run(plan, run.settings, agents=run._agent_for)


def blocked_task(tid: str, reason: str, **kw: object) -> Task:
    return scripted(
        tid,
        Say("working"),
        Block(reason),
        retry_script=(RunStep("test -f fixed.txt"), Say("done after the fix")),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_fixed_blocker_retries_the_task_as_a_new_attempt(
    make_run: MakeRun, responses: Path
) -> None:
    run = with_fixer(
        make_run(blocked_task("api", "need the schema"), scripted("docs", deps=("api",))),
        Say("writing the schema"),
        Write("fixed.txt", "schema\n"),
    )
    await run.execute()
    api = run.tasks["api"]
    assert api.state == "succeeded"
    assert api.attempts == ["api", "api+2"]
    assert api.fixers == ["api+fix1"]
    assert run.tasks["docs"].state == "succeeded"
    assert run.exit_code() == 0
    assert "api+fix1.md" in (responses / "api.md").read_text()
    assert "- parent: api.md" in (responses / "api+fix1.md").read_text()
    assert "previous attempt: api.md" in (responses / "api+2.md").read_text()
    assert "need the schema" in (responses / "api+fix1.md").read_text()  # the prompt says why


async def test_a_failed_fix_escalates_with_what_was_tried(make_run: MakeRun) -> None:
    run = with_fixer(
        make_run(blocked_task("api", "need credentials"), scripted("docs", deps=("api",))),
        Say("looking for credentials"),
        Fail("no credentials anywhere"),
    )
    await run.execute()
    assert run.tasks["api"].state == "escalated"
    assert run.tasks["docs"].state == "skipped"
    [esc] = run.repairs.escalations
    assert esc["task"] == "api"
    assert "need credentials" in str(esc["blocker"])
    assert any("api+fix1" in line for line in esc["tried"])  # type: ignore[attr-defined]
    assert "--resume" in str(esc["next_step"])
    assert run.exit_code() == 1


async def test_the_same_blocker_from_two_tasks_gets_one_shared_fixer(make_run: MakeRun) -> None:
    run = with_fixer(
        make_run(blocked_task("a", "database is down"), blocked_task("b", "database is down")),
        Sleep(0.2),
        Write("fixed.txt", "up\n"),
    )
    await run.execute()
    fixers = [a for a in run.agents.values() if a.role == "fixer"]
    # Whichever task reports the blocker first gets the fixer (a loaded machine may reorder
    # them); the other waits for that fixer, not for one of its own.
    assert [f.id for f in fixers] in (["a+fix1"], ["b+fix1"])
    assert run.tasks["a"].state == "succeeded"
    assert run.tasks["b"].state == "succeeded"
    assert run.tasks["a"].attempts == ["a", "a+2"]
    assert run.tasks["b"].attempts == ["b", "b+2"]


async def test_a_retry_still_blocked_the_same_way_escalates(make_run: MakeRun) -> None:
    task = scripted("a", Block("need the schema"), retry_script=(Block("need the schema"),))
    run = with_fixer(make_run(task), Say("tried something"))
    await run.execute()
    assert run.tasks["a"].state == "escalated"
    assert run.tasks["a"].attempts == ["a", "a+2"]
    assert "still blocked" in run.tasks["a"].reason


BUILD_FAILS_DIFFERENTLY = (
    "python -c \"import pathlib; p = pathlib.Path('n');"
    " n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1));"
    " raise SystemExit('failure ' + ['alpha', 'beta', 'gamma', 'delta'][n])\""
)


async def test_build_fix_cycles_stop_at_max_fix_cycles(make_run: MakeRun) -> None:
    run = with_fixer(
        make_run(scripted("t")),
        Say("a fix that does not help"),
        build=Build(command=(BUILD_FAILS_DIFFERENTLY,), timeout=30, max_fix_cycles=2),
    )
    await run.execute()
    assert run.repairs.builds == ["+build1", "+build2", "+build3"]
    assert [a.id for a in run.agents.values() if a.role == "fixer"] == [
        "+build+fix1",
        "+build+fix2",
    ]
    assert run.repairs.build_state == "escalated"
    assert "max_fix_cycles=2" in str(run.repairs.escalations[0]["reason"])
    assert run.exit_code() == 1


async def test_configuration_errors_never_get_a_fixer(make_run: MakeRun) -> None:
    missing = Task("cmd", agent="command", command=("/nonexistent/agent-program",))
    run = with_fixer(
        make_run(missing, scripted("ok")),
        Say("should never run"),
        build=Build(command=("exit 127",), timeout=10),
    )
    await run.execute()
    assert run.tasks["cmd"].state == "failed"
    assert not [a for a in run.agents.values() if a.role == "fixer"]
    assert run.repairs.build_state == "skipped"  # a task failed, so the build does not run
    run2 = with_fixer(
        make_run(scripted("ok2")), Say("never"), build=Build(command=("exit 127",), timeout=10)
    )
    await run2.execute()
    assert run2.repairs.build_state == "failed"
    assert not [a for a in run2.agents.values() if a.role == "fixer"]


async def test_a_cancelled_fixer_is_not_counted_as_a_fix(make_run: MakeRun) -> None:
    run = with_fixer(make_run(blocked_task("a", "need a hand")), Say("thinking"), Sleep(30))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        while "a+fix1" not in run.agents:
            await asyncio.sleep(0.01)
        run.cancel("a+fix1")
    assert run.agents["a+fix1"].state == "cancelled"
    assert run.tasks["a"].state == "cancelled"
    assert run.tasks["a"].attempts == ["a"]  # no retry as if it had been fixed


async def test_fixers_count_against_max_agents(make_run: MakeRun) -> None:
    run = with_fixer(make_run(blocked_task("a", "stuck"), max_agents=1), Write("fixed.txt", "x"))
    await run.execute()
    assert run.tasks["a"].state == "escalated"
    assert "max_agents=1" in run.tasks["a"].reason
    assert len(run.agents) == 1


def demo_plan(tmp_path: Path, name: str) -> Path:
    plan = tmp_path / "plans" / name
    plan.parent.mkdir(exist_ok=True)
    shutil.copy(ROOT / "plans" / name, plan)
    return plan


async def test_demo_fixes_a_real_pytest_build(tmp_path: Path) -> None:
    plan = load_plan(demo_plan(tmp_path, "demo.yaml"))
    check_environment(plan, os.environ)
    responses = tmp_path / "agent-responses"
    code = await run_plan(plan, RunOptions(responses=responses, json=True))
    assert code == 0
    assert "test_mul" in (responses / "+build1.md").read_text()
    assert (
        (responses / "+build2.md")
        .read_text()
        .rstrip()
        .splitlines()[-1]
        .startswith("status: succeeded")
    )
    report = (responses / "REPORT.md").read_text()
    assert "+build+fix1" in report
    assert "build check: passed" in report


async def test_demo_escalation_exits_1_with_an_actionable_report(tmp_path: Path) -> None:
    plan = load_plan(demo_plan(tmp_path, "demo-escalation.yaml"))
    check_environment(plan, os.environ)
    responses = tmp_path / "agent-responses"
    code = await run_plan(plan, RunOptions(responses=responses, json=True))
    assert code == 1
    report = (responses / "REPORT.md").read_text()
    assert "## Escalations: a human must act" in report
    assert "PAYMENT_SANDBOX_KEY" in report
    assert "next step:" in report
    assert (tmp_path / "demo-workspace" / "shop" / "models.py").exists()  # work is kept


async def test_interrupting_during_a_fixer_leaves_a_report_that_says_so(
    workspace: Path, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "name: interrupted\nworkspace: ws\nlimits: {grace: 0.5}\n"
        "fixer: {agent: scripted, script: [{say: fixing}, {sleep: 30}]}\n"
        "tasks:\n  - id: a\n    agent: scripted\n    script: [{block: need help}]\n"
    )
    responses = tmp_path / "agent-responses"
    main = asyncio.create_task(
        run_plan(load_plan(plan_file), RunOptions(responses=responses, json=True))
    )
    fixer_file = responses / "a+fix1.md"
    for _ in range(500):
        if fixer_file.exists() and "fixing" in fixer_file.read_text():
            break
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    assert await main == 130
    report = (responses / "REPORT.md").read_text()
    assert "- state: interrupted" in report
    assert "interrupted by SIGINT" in report
    assert fixer_file.read_text().rstrip().splitlines()[-1].startswith("status: cancelled")


@pytest.mark.parametrize("step", [Fail("boom"), Block("why")])
async def test_no_fixer_configured_means_escalation_not_a_fake_fix(
    make_run: MakeRun, step: object
) -> None:
    run = make_run(scripted("a", step))  # type: ignore[arg-type]
    await run.execute()
    assert run.tasks["a"].state in ("failed", "escalated")
    assert not [a for a in run.agents.values() if a.role == "fixer"]


def test_an_escalated_build_without_a_fixer_section_reports_the_truth(tmp_path: Path) -> None:
    """The build failed and the plan has no fixer: REPORT.md and the summary say why, make up
    no fixer, and their next step is a command that runs as written."""
    fleet = Fleet(tmp_path)
    try:
        fleet.plan(task("a"), build={"command": "echo 'error: x.c:3: boom' >&2; exit 1"})
        done = fleet.cli("run", "plan.yaml", "--no-live", "--responses", "out")
        assert done.code == 1
        report = (fleet.cwd / "out" / "REPORT.md").read_text()
        why = "no fixer: the plan has no fixer: section, and the build has no fixer of its own"
        assert f"- why it escalated: {why}" in report
        assert "- blocked by: error: x.c:3: boom" in report
        assert "fix-build" not in report
        assert "cannot fix" not in report
        resume = "orchestrator run plan.yaml --resume --responses out"
        assert f"continue the run: {resume}\n" in report
        assert "escalated: (the build): no fixer" in done.out, "the summary says it too"
        assert resume in " ".join(done.out.split())
        again = fleet.cli(*resume.split()[1:])
        assert again.code == 1, again.err  # it runs (the build still fails), not exit 2
        assert "resume: 1 succeeded task(s) kept: a" in again.err
    finally:
        fleet.close()


def test_an_escalated_build_after_a_fix_says_what_the_fixer_did(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        fixer = {"agent": "scripted", "script": [{"say": "Touched fixed"}, {"run": "touch fixed"}]}
        failing = "test -e never || { echo 'FAILED t.py::test_x - boom'; exit 1; }"
        fleet.plan(task("a"), build={"command": failing}, fixer=fixer)
        done = fleet.cli("run", "plan.yaml", "--no-live")
        assert done.code == 1
        report = (fleet.responses / "REPORT.md").read_text()
        assert "+build+fix1 succeeded: Touched fixed" in report
        step = next(line for line in report.splitlines() if line.startswith("- next step:"))
        assert "(orchestrator tail +build+fix1)" in step
        assert fleet.cli("tail", "+build+fix1").code == 0, "the command in the next step works"
    finally:
        fleet.close()


async def test_a_build_check_also_runs_after_a_named_task(make_run: MakeRun) -> None:
    base = make_run(
        scripted("first", Write("a.txt", "a")),
        scripted("second", Sleep(0.3), deps=("first",)),
    )
    plan = dataclasses.replace(
        base.plan, build=Build(command=("test -f a.txt",), timeout=10, after=("first",))
    )
    run = Run(plan, base.settings, agents=base._agent_for)
    await run.execute()
    assert run.repairs.builds == ["+build1", "+build2"]
    build1, second = run.agents["+build1"], run.agents["second"]
    assert build1.started is not None
    assert second.ended is not None
    assert build1.started < second.ended  # the mid-run check did not wait for the end
    assert run.repairs.build_state == "passed"
    assert run.exit_code() == 0


# --- what a fixer gets ------------------------------------------------------------------------


def test_a_fixer_gets_the_fixer_keys_else_the_blocked_tasks_and_the_builds_the_defaults() -> None:
    from orchestrator.engine import recovery
    from orchestrator.engine.blockers import Blocker
    from orchestrator.engine.spawns import fixer_spawn
    from orchestrator.engine.state import AgentRecord
    from orchestrator.plan.model import FixerSpec, Plan, Task

    task = Task(
        "a", agent="claude-code", prompt="p", permission_mode="plan", allowed_tools=("Read",),
        args=("--x",), env=(("A", "1"),), budget_usd=1.0,
    )  # fmt: skip
    base = Task("build", agent="claude-code", permission_mode="acceptEdits", budget_usd=3.0)
    spec = FixerSpec(
        agent="claude-code", allowed_tools=("Edit", "Bash"), args=(), budget_usd=0.25, base=base
    )
    plan = Plan("t", (task,), fixer=spec)

    def spawn_for(task_id: str | None) -> Task:
        blocker = Blocker(task_id, task_id or "+build1", "agent", "stuck", 0)
        action = recovery.SpawnFixer("fix-1", blocker, (), ())
        rec = AgentRecord("x", "x", "claude-code", "task", 1, 0, None)
        made = fixer_spawn(plan, action, rec, "")
        assert made is not None
        return made.task

    fixer = spawn_for("a")
    assert (fixer.agent, fixer.permission_mode, fixer.allowed_tools) == (
        "claude-code", "plan", ("Edit", "Bash"),
    )  # fmt: skip
    assert (fixer.args, fixer.env, fixer.budget_usd) == ((), (("A", "1"),), 0.25)
    build_fixer = spawn_for(None)  # its kind is still the fixer's (else it is scripted)
    assert (build_fixer.permission_mode, build_fixer.budget_usd) == ("acceptEdits", 0.25)
    assert build_fixer.allowed_tools == ("Edit", "Bash")
