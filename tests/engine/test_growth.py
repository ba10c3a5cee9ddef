"""Tasks added to a live run through the scheduler's one path (`growth.answer`): the graph
grows, the frontier releases them, `cancel --tree` reaches them, and refusals change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conftest import scripted, sleeper

from orchestrator.engine import growth
from orchestrator.engine.scheduler import Run

MakeRun = Callable[..., Run]


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)


async def test_an_added_task_waits_for_its_dependency_then_runs_as_its_adder_s_child(
    make_run: MakeRun,
) -> None:
    run = make_run(sleeper("a", 0.3))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        await until(lambda: "a" in run.agents)
        answer = growth.answer(run, {"id": "b", "prompt": "go", "depends_on": ["a"]}, adder="a")
        assert answer == {"ok": True, "added": "b", "depth": 1, "parent": "a"}
        assert "b" not in run.agents  # a has not succeeded yet
    assert run.tasks["b"].state == "succeeded"
    assert run.agents["b"].started >= run.agents["a"].ended  # type: ignore[operator]
    assert (run.agents["b"].parent, run.agents["b"].depth) == ("a", 1)
    assert run.agents["a"].children == ["b"]
    assert [t.id for t in run.plan.tasks] == ["a", "b"]
    assert run.exit_code() == 0


async def test_a_refused_addition_leaves_the_run_as_it_was(make_run: MakeRun) -> None:
    run = make_run(sleeper("a", 0.2), max_agents=2)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        await until(lambda: "a" in run.agents)
        first = growth.answer(run, {"id": "b", "prompt": "x", "depends_on": ["a"]}, adder="a")
        second = growth.answer(run, {"id": "c", "prompt": "x"}, adder="a")
        stranger = growth.answer(run, {"id": "d", "prompt": "x"}, adder="nobody")
    assert first["ok"] is True
    assert second == {"ok": False, "refused": {"rule": "max_agents", "message": second[
        "refused"]["message"], "hint": second["refused"]["hint"]}}  # fmt: skip
    assert stranger["refused"]["rule"] == "not-running"
    assert set(run.tasks) == {"a", "b"}
    assert run.governor.started == 2


async def test_cancel_tree_reaches_the_tasks_an_agent_added_that_have_not_started(
    make_run: MakeRun,
) -> None:
    run = make_run(sleeper("a", 30))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        await until(lambda: "a" in run.agents)
        assert growth.answer(run, {"id": "b", "depends_on": ["a"]}, adder="a")["ok"]
        run.cancel("a", tree=True)
    assert run.tasks["a"].state == "cancelled"
    assert run.tasks["b"].state == "cancelled"
    assert "b" not in run.agents


async def test_a_person_s_task_runs_at_the_run_s_depth_and_is_released_at_once(
    make_run: MakeRun,
) -> None:
    run = make_run(sleeper("a", 0.5), scripted("done"))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        await until(lambda: run.tasks["done"].state == "succeeded")
        answer = growth.answer(run, {"id": "p", "prompt": "x", "depends_on": ["done"]}, adder=None)
        assert answer == {"ok": True, "added": "p", "depth": 0, "parent": None}
        await until(lambda: "p" in run.agents)
    assert run.agents["p"].parent is None
    assert run.tasks["p"].state == "succeeded"


async def test_nothing_is_added_before_the_run_dispatches_or_after_it_ended(
    make_run: MakeRun,
) -> None:
    run = make_run(scripted("a"))
    early = growth.answer(run, {"id": "b", "prompt": "x"}, adder=None)
    assert early["refused"]["rule"] == "starting"
    await run.execute()
    late = growth.answer(run, {"id": "b", "prompt": "x"}, adder=None)
    assert late["refused"]["rule"] == "closing"
    assert set(run.tasks) == {"a"}
