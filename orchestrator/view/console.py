"""What a run prints on the terminal: plain lines as agents speak, the live table, and the
summary at its end (or one JSON object with ``--json``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.engine.state import AgentRecord
from orchestrator.events import AgentEvent, Text
from orchestrator.process.lines import one_line
from orchestrator.records.progress import MAX_PARTIAL, clean
from orchestrator.view import snapshot

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run


def plain_printer(
    write: Callable[[str], object] = sys.stdout.write,
) -> Callable[[AgentRecord, str, AgentEvent | None], None]:
    """Every event but command output (that stays in the progress files), one line each.

    An agent's streamed words are printed a whole line at a time: a line still growing is
    held until it ends (a newline, or the agent's next event of another kind)."""
    open_lines: dict[str, str] = {}

    def show(agent_id: str, line: str) -> None:
        line = clean(line)
        if line.strip():
            write(f"{agent_id:>16} | {line}\n")

    def on_event(rec: AgentRecord, line: str, event: AgentEvent | None) -> None:
        if isinstance(event, Text):
            *whole, rest = (open_lines.get(rec.id, "") + event.text).split("\n")
            while len(rest) > MAX_PARTIAL:  # an endless line, shown in bounded pieces
                whole.append(rest[:MAX_PARTIAL])
                rest = rest[MAX_PARTIAL:]
            open_lines[rec.id] = rest
            for part in whole:
                show(rec.id, part)
            return
        held = open_lines.pop(rec.id, "")
        if held:
            show(rec.id, held)
        if line.startswith(("| ", "! ")) or not line:
            return  # command output lives in the progress files; stdout gets the story
        write(f"{rec.id:>16} | {line}\n")

    return on_event


async def run_live(run: Run) -> None:
    """Run ``run`` under a live table redrawn four times a second."""
    from rich.live import Live

    from orchestrator.view import dashboard

    with Live(
        dashboard.render(snapshot.from_run(run)), refresh_per_second=4, transient=False
    ) as live:
        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(run.execute())

            async def refresh() -> None:
                while not main.done():
                    rows = dashboard.rows_that_fit(live.console)
                    live.update(dashboard.render(snapshot.from_run(run), max_rows=rows))
                    await asyncio.sleep(0.25)

            tg.create_task(refresh())
        live.update(dashboard.render(snapshot.from_run(run)))


def print_summary(snap: snapshot.Snapshot, written: Path | None, *, as_json: bool) -> None:
    """The end of a run: the table of tasks, then what happened in a few lines (tasks that
    succeeded, the build, each escalation and its next step, cost against the budget, the
    report's path); or one JSON object."""
    from orchestrator.view import board

    rows = board.task_rows(snap)
    totals = board.summary(snap, rows, now=time.time())
    if as_json:
        escalations = snap.extra.get("escalations", [])
        out = {
            **snap.as_status_json(), "tasks": list(snap.tasks), "escalations": escalations,
            "board": rows, "totals": totals, "report": str(written) if written else None,
        }  # fmt: skip
        sys.stdout.write(json.dumps(out) + "\n")
        return
    from rich.console import Console

    from orchestrator.view import dashboard

    console = Console()
    if console.is_terminal:
        console.print(dashboard.summary(snap))
    for line in outcome_lines(snap, totals, written):
        console.print(dashboard.plain(line))


def outcome_lines(
    snap: snapshot.Snapshot, totals: dict[str, Any], written: Path | None
) -> list[str]:
    """What happened, in a few plain lines: the end of a run on the terminal."""
    lines = [f"{totals['succeeded']} of {totals['tasks']} tasks succeeded"
             + (f" in {_duration(totals['elapsed'])}" if totals["elapsed"] is not None else "")
             + f" ({snap.run.get('state', '?')})"]  # fmt: skip
    others: dict[str, list[str]] = {}
    for task in snap.tasks:
        if task["state"] != "succeeded":
            others.setdefault(str(task["state"]), []).append(str(task["id"]))
    for state, ids in sorted(others.items()):
        lines.append(f"  {state}: {', '.join(ids)}")
    build = totals.get("build")
    lines.append(f"build: {build}" if build else "build: none ran")
    for esc in totals["escalations"]:
        lines.append(f"escalated: {esc['task']}: {esc['reason']}; next: {esc['next_step']}")
    budget = totals["budget_usd"]
    cost = max(totals["cost_usd"], snap.spent_usd)
    lines.append(f"cost: ${cost:.4f}" + (f" of ${budget:.2f} budget" if budget is not None else ""))
    if snap.fence:
        lines.append(f"stopped: {snap.fence}")
    if written is not None:
        lines.append(f"report: {written}")
    return [one_line(line) for line in lines]


def _duration(seconds: float) -> str:
    minutes, sec = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}m{sec:04.1f}s" if minutes else f"{sec:.1f}s"
