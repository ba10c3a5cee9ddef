"""What a run prints on the terminal: plain lines as agents speak, the live table, and the
summary at its end (or one JSON object with ``--json``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from orchestrator.engine.state import AgentRecord
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
    `flush`), so 10,000 agents' lines cost a few writes a second, not one each."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, rec: AgentRecord, line: str) -> None:
        if line.startswith(("| ", "! ")) or not line:
            return  # command output lives in the progress files; stdout gets the story
        self._lines.append(f"{rec.id:>16} | {line}\n")
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

    def frame(rows: int) -> RenderableType:
        return dashboard.render(snapshot.live_view(run, rows=rows), max_rows=rows)

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
    """The end of a run: the table of tasks and every escalation, or one JSON object."""
    if as_json:
        escalations = snap.extra.get("escalations", [])
        out = {**snap.as_status_json(), "tasks": list(snap.tasks), "escalations": escalations}
        sys.stdout.write(json.dumps(out) + "\n")
        return
    from rich.console import Console

    from orchestrator.view import dashboard

    console = Console()
    rows = max(dashboard.rows_that_fit(console), SUMMARY_ROWS)
    console.print(dashboard.summary(snap, max_rows=rows))
    if written is not None:
        console.print(dashboard.plain(f"report: {written}"))
