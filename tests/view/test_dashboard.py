"""Views are functions of a snapshot: the live table, the footer and the final summary."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import replace

from conftest import scripted, sleeper
from rich.console import Console

from orchestrator.engine.scheduler import Run
from orchestrator.plan.model import Run as RunStep
from orchestrator.view import dashboard, live, report, snapshot
from orchestrator.view.snapshot import Snapshot


def snap() -> Snapshot:
    agents = (
        {"id": "models", "task": "models", "kind": "scripted", "state": "succeeded",
         "started": 100.0, "ended": 101.5, "tokens_in": 10, "tokens_out": 5, "cost_usd": 0.01,
         "last_line": "finished: done", "role": "task", "parent": None, "reason": "done"},
        {"id": "api", "task": "api", "kind": "claude", "state": "running", "started": 101.0,
         "ended": None, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
         "last_line": "\\x1b[31mnot red", "role": "task", "parent": None, "reason": ""},
    )  # fmt: skip
    tasks = (
        {"id": "models", "state": "succeeded", "attempts": ["models"], "fixers": [], "reason": ""},
        {"id": "api", "state": "running", "attempts": ["api"], "fixers": [], "reason": ""},
    )
    return Snapshot(
        run={"plan": "demo", "state": "running", "started": 100.0},
        agents=agents,
        tasks=tasks,
        fence="cancel --all",
        budget_usd=2.0,
        spent_usd=0.01,
    )


def render_text(renderable: object) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_live_table_shows_every_agent_running_first() -> None:
    text = render_text(dashboard.render(snap(), now=103.0))
    lines = text.splitlines()
    api_row = next(i for i, line in enumerate(lines) if " api " in line)
    models_row = next(i for i, line in enumerate(lines) if " models " in line)
    assert api_row < models_row
    assert "2.0s" in lines[api_row]  # elapsed from the snapshot's clock
    assert "1.5s" in lines[models_row]
    assert "agents: 1 running, 1 succeeded" in text
    assert "budget $0.0100 of $2.00" in text
    graph = {"models": [], "api": ["models"]}
    board = render_text(dashboard.render(replace(snap(), extra={"graph": graph}), now=103.0))
    assert "tasks: 1 of 2 done (1 succeeded), 1 running, 0 queued, 0 waiting" in board
    assert "elapsed 3.0s | cost $0.0100 of $2.00" in board
    assert "fence up: cancel --all" in text


def test_live_table_shows_tasks_not_started_with_what_they_wait_on() -> None:
    base = snap()
    tasks = (*base.tasks, {"id": "docs", "state": "pending"}, {"id": "ui", "state": "pending"})
    graph = {"models": [], "api": ["models"], "docs": ["models"], "ui": ["api"]}
    shown = Snapshot(run=base.run, agents=base.agents, tasks=tasks[:2], extra={"graph": graph})
    text = render_text(dashboard.render(shown, now=103.0))
    lines = text.splitlines()
    docs = next(line for line in lines if "│ docs" in line)
    ui = next(line for line in lines if "│ ui" in line)
    assert "queued" in docs  # its dependencies succeeded: it waits for a slot
    assert "waiting" in ui
    assert "on api" in ui
    assert "tasks: 1 of 4 done (1 succeeded), 1 running, 1 queued, 1 waiting" in text


def test_summary_lists_tasks_with_state_and_reason() -> None:
    text = render_text(dashboard.summary(snap()))
    assert "models" in text
    assert "succeeded" in text


def test_report_markdown_has_tasks_agents_and_cost() -> None:
    text = report.render(snap())
    assert text.startswith("# Report: demo\n")
    assert "| models | succeeded | 1 | 1.5s | - | 15 | $0.0100 |" in text
    assert "[api](api.md)" in text
    assert "- stopped: cancel --all" in text
    assert "cost $0.0100 of $2.00 budget" in text


async def test_while_the_first_interrupt_waits_out_the_grace_the_rows_say_stopping(
    make_run: Callable[..., Run],
) -> None:
    stubborn = RunStep("trap '' TERM; echo up; while :; do sleep 0.05; done")
    run = make_run(scripted("a", stubborn), grace=60)
    async with asyncio.TaskGroup() as tg:
        main = tg.create_task(run.execute())
        async with asyncio.timeout(10):
            while "a" not in run.agents or "| up" not in run.agents["a"].lines:
                await asyncio.sleep(0.01)
        run.interrupt(signal.SIGINT)
        snap = snapshot.from_run(run)
        assert [a["state"] for a in snap.agents] == ["stopping"]
        text = render_text(dashboard.render(snap))
        assert "│ a    │ stopping │ a     │" in text
        assert "stopping 1 agent(s), up to 60s grace; Ctrl-C again kills at once" in text
        assert "Ctrl-C again kills at once" in text
        assert not main.done(), "the first interrupt waits out the grace"
        run.interrupt(signal.SIGINT)  # the second one kills at once
    assert run.agents["a"].state == "cancelled"
    assert [a["state"] for a in snapshot.from_run(run).agents] == ["cancelled"]


def many(n: int, *, failing: tuple[int, ...] = ()) -> Snapshot:
    agents = tuple(
        {"id": f"t{i}", "task": f"t{i}", "state": "running" if i % 2 else "succeeded",
         "started": float(i), "ended": None, "last_line": f"line {i}"}
        for i in range(n)
    )  # fmt: skip
    tasks = tuple(
        {"id": f"t{i}", "state": "failed" if i in failing else "succeeded",
         "attempts": [f"t{i}"], "fixers": [], "reason": "boom" if i in failing else ""}
        for i in range(n)
    )  # fmt: skip
    return Snapshot(run={"plan": "big", "state": "finished"}, agents=agents, tasks=tasks)


def test_the_live_table_shows_the_rows_that_fit_and_counts_the_rest() -> None:
    text = render_text(dashboard.render(many(1000), max_rows=5, now=2000.0))
    assert "│ t1 " in text
    assert "│ t9 " in text
    assert "│ t11 " not in text
    assert "│ t0 " not in text
    assert "... and 995 more agents" in text
    assert "agents: 500 running, 500 succeeded" in text


def test_the_summary_of_a_large_run_shows_what_failed_first_and_says_what_it_left_out() -> None:
    text = render_text(dashboard.summary(many(1000, failing=(500, 998)), max_rows=4))
    assert "│ t500 " in text
    assert "│ t998 " in text
    assert "│ t0 " in text
    assert "│ t1 " in text
    assert "│ t2 " not in text
    assert "... and 996 more tasks (996 succeeded); REPORT.md lists all" in text


async def test_a_live_view_holds_the_top_rows_and_counts_every_task(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(*(scripted(f"s{i}") for i in range(6)), scripted("late", deps=("s0",)))
    await run.execute()
    view = live.live_view(run, rows=2)
    assert view.live_rows is not None
    assert len(view.live_rows) == 2
    assert view.counts == {"succeeded": 7}
    assert view.totals is not None
    assert (view.totals["tasks"], view.totals["done"], view.totals["succeeded"]) == (7, 7, 7)
    text = render_text(dashboard.render(view, max_rows=2))
    assert "... and 5 more rows (the totals count every task)" in text
    assert "tasks: 7 of 7 done (7 succeeded), 0 running, 0 queued, 0 waiting" in text


async def test_the_live_table_shows_running_then_waiting_and_queued_tasks_with_totals(
    make_run: Callable[..., Run],
) -> None:
    run = make_run(
        sleeper("slow", 60), sleeper("next", 60), sleeper("after", 1, deps=("slow",)),
        max_concurrency=1, budget_usd=3.0,
    )  # fmt: skip
    async with asyncio.TaskGroup() as tg:
        main = tg.create_task(run.execute())
        async with asyncio.timeout(30):
            while run.tasks["slow"].state != "running":
                await asyncio.sleep(0.01)
        view = live.live_view(run, rows=10)
        assert view.live_rows is not None
        assert [(r["task"], r["state"]) for r in view.live_rows] == [
            ("slow", "running"),
            ("next", "queued"),
            ("after", "waiting"),
        ]
        assert view.live_rows[2]["waiting_on"] == ["slow"]
        text = render_text(dashboard.render(view, max_rows=10))
        assert "tasks: 0 of 3 done (0 succeeded), 1 running, 1 queued, 1 waiting" in text
        assert "of $3.00" in text
        assert "elapsed " in text
        assert "on slow" in text
        run.cancel_all(reason="test over")
        await main
    ended = live.live_view(run, rows=10)
    assert ended.live_rows is not None
    assert {r["task"] for r in ended.live_rows} == {"slow", "next", "after"}
    assert ended.totals is not None
    assert ended.totals["done"] == 3


async def test_plain_lines_are_written_together_in_order_and_on_flush() -> None:
    import io

    from orchestrator.engine.state import AgentRecord
    from orchestrator.view.console import PlainPrinter

    out = io.StringIO()
    printer = PlainPrinter(out)

    class Rec:
        id = "a"

    rec: AgentRecord = Rec()  # type: ignore[assignment]
    for line in ("started: x", "| command output stays in the file", "finished", "status: ok"):
        printer(rec, line)
    assert out.getvalue() == ""  # gathered for the next frame
    printer.flush()
    assert out.getvalue().splitlines() == [
        "               a | started: x",
        "               a | finished",
        "               a | status: ok",
    ]
