"""What the page is fed: the run's state, rebuilt when the journal grows, and progress files.

The same files `watch` and `tail -f` read: one `Feed` per server polls the journal and keeps
the latest state (a version number and the JSON text, built once for every client); each
client's sender reads it when it changes, so a slow client only ever skips to the newest
state and never holds anyone up. Progress files are read per client from the client's own
offset, so a client that reconnects catches up from where it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.records.journal import JournalReader
from orchestrator.records.progress import safe_path
from orchestrator.records.rundir import RunDir, is_locked
from orchestrator.view import board, timeline
from orchestrator.view.snapshot import from_journal, with_last_lines

POLL = 0.05
"""How often the journal is checked for new records."""
TIMELINE_EVERY = 1.0
"""The timeline (the costliest part of a state) is redrawn at most this often."""
AGENT_FIELDS = (
    "id", "task", "role", "state", "parent", "started", "ended", "cost_usd", "last_line", "reason",
)  # fmt: skip
CHUNK = 64 * 1024
"""The most of a progress file sent in one message."""


class Feed:
    """The latest state of the run in ``responses``; `run` keeps it fresh until cancelled."""

    def __init__(self, responses: Path) -> None:
        self.responses = responses
        self.rundir = RunDir(responses)
        self._reader = JournalReader(self.rundir.journal)
        self.version = 0
        self.text = ""
        self._changed = asyncio.Event()
        self._svg = ""
        self._svg_at = 0.0

    async def run(self) -> None:
        tick = 0.0
        while True:
            changed = await asyncio.to_thread(self._reader.poll)
            now = time.monotonic()
            if changed or now - tick >= 1.0 or not self.version:  # elapsed times move too
                tick = now
                await self._publish(now)
            await asyncio.sleep(POLL)

    async def refresh(self) -> None:
        """Read the journal and publish its state now (the last one, when the run ends)."""
        await asyncio.to_thread(self._reader.poll)
        self._svg_at = 0.0  # redraw the timeline too
        await self._publish(time.monotonic())

    async def _publish(self, now: float) -> None:
        self.text = await asyncio.to_thread(self._build, now)
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_newer(self, version: int, patience: float) -> None:
        """Return once the state is newer than ``version``, or after ``patience`` seconds."""
        if self.version > version:
            return
        try:
            async with asyncio.timeout(patience):
                await self._changed.wait()
        except TimeoutError:
            pass

    def _build(self, now: float) -> str:
        """The state message (JSON text), built in a worker thread."""
        alive = is_locked(self.rundir)
        snap = with_last_lines(from_journal(self._reader.state, alive=alive), self.responses)
        rows = board.task_rows(snap)
        if now - self._svg_at >= TIMELINE_EVERY or not self._svg:
            graph = snap.extra.get("graph") or {}
            tl = timeline.build(snap.run, snap.agents, graph, now=time.time() if alive else None)
            self._svg = timeline.svg(tl, title=f"{snap.run.get('plan', '?')}: timeline")
            self._svg_at = now
        state: dict[str, Any] = {
            "type": "state",
            "run": {k: snap.run.get(k) for k in ("plan", "state", "run_id", "started", "ended")},
            "alive": alive,
            "summary": board.summary(snap, rows, now=time.time()),
            "tasks": rows,
            "agents": [{k: a.get(k) for k in AGENT_FIELDS} for a in snap.agents],
            "timeline_svg": self._svg,
        }
        return json.dumps(state, default=str)


def read_progress(responses: Path, agent_id: str, offset: int) -> tuple[int, str] | None:
    """Up to `CHUNK` bytes of the agent's progress file from ``offset``, cut at the last whole
    line: (the new offset, the text). None when the file does not exist (yet)."""
    try:
        path = safe_path(responses, f"{agent_id}.md")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (ValueError, OSError):
        return None
    try:
        data = os.pread(fd, CHUNK, offset)
    finally:
        os.close(fd)
    if len(data) == CHUNK and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]
    return offset + len(data), data.decode("utf-8", "replace")
