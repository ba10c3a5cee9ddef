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
from orchestrator.events import AgentEvent, Text
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
