"""What a run prints on the terminal: plain lines as agents speak, the live table, and the
summary at its end (or one JSON object with ``--json``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.engine.state import AgentRecord
from orchestrator.events import AgentEvent, Text, Usage
from orchestrator.process.lines import one_line
from orchestrator.records.progress import MAX_PARTIAL
from orchestrator.records.render import clean
from orchestrator.view import snapshot

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from orchestrator.engine.scheduler import Run

SUMMARY_ROWS = 50
"""The end-of-run table shows at least this many tasks (more on a taller terminal)."""
VIEW_SHARE = 0.03
"""At most this share of the loop's CPU time goes to drawing the live table."""
FRAME = 0.25
"""Seconds between frames of the live table and between writes of plain lines."""


class PlainPrinter:
    """Every event but command output (that stays in the progress files), one line each.

    Lines are gathered and written at most every `FRAME` seconds in one write (and by
    `flush`), so 10,000 agents' lines cost a few writes a second, not one each. An agent's
    streamed words are shown a whole line at a time: a line still growing is held until it
    ends (a newline, or the agent's next event of another kind). A usage report (the model
    gateway's, from its own thread, may come mid-line) goes before that line and does not
    end it, as in the progress file."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._open: dict[str, str] = {}

    def __call__(self, rec: AgentRecord, line: str, event: AgentEvent | None = None) -> None:
        if isinstance(event, Text):
            *whole, rest = (self._open.get(rec.id, "") + event.text).split("\n")
            while len(rest) > MAX_PARTIAL:  # an endless line, shown in bounded pieces
                whole.append(rest[:MAX_PARTIAL])
                rest = rest[MAX_PARTIAL:]
            self._open[rec.id] = rest
            for part in whole:
                self._add(rec.id, clean(part))
            return
        if isinstance(event, Usage):
            self._add(rec.id, line)
            return
        held = self._open.pop(rec.id, "")
        if held:
            self._add(rec.id, clean(held))
        if line.startswith(("| ", "! ")) or not line:
            return  # command output lives in the progress files; stdout gets the story
        self._add(rec.id, line)

    def _add(self, agent_id: str, line: str) -> None:
        if not line.strip():
            return
        self._lines.append(f"{agent_id:>16} | {line}\n")
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FRAME, self.flush)

    def flush(self) -> None:
        """Write what is gathered now (the run's end calls it before its summary)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if lines:
            self._out.write("".join(lines))
            self._out.flush()


async def run_live(run: Run, *, console: Console | None = None) -> None:
    """Run ``run`` under a live table redrawn up to four times a second (on ``console``, by
    default the terminal's)."""
    from rich.live import Live

    from orchestrator.view import dashboard
    from orchestrator.view.live import live_view

    def frame(rows: int) -> RenderableType:
        return dashboard.render(live_view(run, rows=rows), max_rows=rows)

    # Drawn only here, FRAME apart: Rich's own refresh thread would draw the same frame again.
    with Live(frame(40), console=console, auto_refresh=False, transient=False) as live:
        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(run.execute())

            async def refresh() -> None:
                while not main.done():
                    t0 = time.thread_time()
                    live.update(frame(dashboard.rows_that_fit(live.console)), refresh=True)
                    # a frame that took long waits longer: drawing never takes more than
                    # VIEW_SHARE of the loop's time, however many agents there are
                    await asyncio.sleep(max(FRAME, (time.thread_time() - t0) / VIEW_SHARE))

            tg.create_task(refresh())
        live.update(frame(dashboard.rows_that_fit(live.console)), refresh=True)


def print_summary(snap: snapshot.Snapshot, written: Path | None, *, as_json: bool) -> None:
    """The end of a run: the table of tasks (on a terminal), then what happened in a few lines
    (tasks that succeeded, the build, each escalation and its next step, cost against the
    budget, the report's path); or one JSON object."""
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
        shown = max(dashboard.rows_that_fit(console), SUMMARY_ROWS)
        console.print(dashboard.summary(snap, max_rows=shown))
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
