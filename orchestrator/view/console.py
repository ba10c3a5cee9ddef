"""What a run prints on the terminal: plain lines as agents speak, the live table, and the
summary at its end (or one JSON object with ``--json``)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.engine.state import AgentRecord
from orchestrator.view import snapshot

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run


def plain_printer() -> Callable[[AgentRecord, str], None]:
    """Every event but command output (that stays in the progress files), one line each."""
    write = sys.stdout.write

    def on_event(rec: AgentRecord, line: str) -> None:
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
    """The end of a run: the table of tasks and every escalation, or one JSON object."""
    if as_json:
        escalations = snap.extra.get("escalations", [])
        out = {**snap.as_status_json(), "tasks": list(snap.tasks), "escalations": escalations}
        sys.stdout.write(json.dumps(out) + "\n")
        return
    from rich.console import Console

    from orchestrator.view import dashboard

    console = Console()
    console.print(dashboard.summary(snap))
    if written is not None:
        console.print(dashboard.plain(f"report: {written}"))
