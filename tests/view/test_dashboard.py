"""Views are functions of a snapshot: the live table, the footer and the final summary."""

from __future__ import annotations

from rich.console import Console

from orchestrator.view import dashboard, report
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
    assert "fence up: cancel --all" in text


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
