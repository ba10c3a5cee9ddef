"""`watch`: the live dashboard in another terminal, redrawn from the journal as it grows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.live import Live

from orchestrator import dashboard, snapshot
from orchestrator.journal import JournalReader
from orchestrator.rundir import RunDir, is_locked

POLL = 0.1


async def watch_run(responses: Path, *, once: bool = False) -> None:
    """Redraw within ``POLL`` seconds of any journal change until the run ends."""
    rundir = RunDir(responses)
    reader = JournalReader(rundir.journal)
    reader.poll()

    def view() -> snapshot.Snapshot:
        return snapshot.from_journal(reader.state, alive=is_locked(rundir))

    with Live(dashboard.render(view()), refresh_per_second=10) as live:
        while not once:
            await asyncio.sleep(POLL)
            reader.poll()
            snap = view()
            live.update(dashboard.render(snap))
            if snap.run.get("state") in ("finished", "interrupted"):
                return
