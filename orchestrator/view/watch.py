"""`watch`: the live dashboard in another terminal, redrawn from the journal as it grows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.live import Live

from orchestrator.records.journal import JournalReader
from orchestrator.records.rundir import RunDir, is_locked
from orchestrator.view import dashboard, snapshot
from orchestrator.view.snapshot import with_last_lines

POLL = 0.05
"""How often the journal is checked: a change is on screen within about this long."""
TICK = 0.5
"""Without changes, the table is still redrawn this often (elapsed times, last lines)."""


async def watch_run(responses: Path, *, console: Console | None = None) -> None:
    """Redraw at once when the journal changes (checked every `POLL` s) until the run ends.

    A run that is over (finished, or interrupted: its lock is free) is drawn once.
    """
    rundir = RunDir(responses)
    reader = JournalReader(rundir.journal)
    reader.poll()

    def view() -> snapshot.Snapshot:
        return with_last_lines(
            snapshot.from_journal(reader.state, alive=is_locked(rundir)), responses
        )

    snap = view()
    loop = asyncio.get_running_loop()
    with Live(dashboard.render(snap), console=console, auto_refresh=False) as live:
        drawn = loop.time()
        while snap.run.get("state") not in ("finished", "interrupted"):
            await asyncio.sleep(POLL)
            changed = reader.poll()
            if changed or loop.time() - drawn >= TICK:
                snap = view()
                rows = dashboard.rows_that_fit(live.console)
                live.update(dashboard.render(snap, max_rows=rows), refresh=True)
                drawn = loop.time()
