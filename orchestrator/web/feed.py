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
from orchestrator.view.snapshot import Snapshot, from_journal, with_last_lines

POLL = 0.05
"""How often the journal is checked for new records."""
MIN_INTERVAL = 0.1
"""A new state at most this often (or four times its build's CPU time, if that is longer)."""
TIMELINE_EVERY = 2.0
"""The timeline is redrawn at most this often (or ten times its drawing time)."""
CHUNK = 64 * 1024
"""The most of a progress file sent in one message."""


class Feed:
    """The latest state of the run in ``responses``; `run` keeps it fresh until cancelled.

    ``text`` (the state) and ``svg`` (the timeline) are rebuilt in a worker thread, each at
    most as often as a few times its own build time, so however large the run, the page's
    share of the machine stays small: a slow build only means fewer, newer states. The state's
    build is timed in CPU, not wall time: on a crowded machine the wall time of the same work
    grows with the crowd, and spacing states by it delayed every page by seconds' fractions
    without saving the run any CPU. News seen between states goes out as soon as the next
    one is due, not at the next poll after that.
    """

    def __init__(self, responses: Path) -> None:
        self.responses = responses
        self.rundir = RunDir(responses)
        self._reader = JournalReader(self.rundir.journal)
        self.version = 0
        self.text = ""
        self.svg_version = 0
        self.svg = ""
        self._changed = asyncio.Event()
        self._built_at = self._svg_at = -1e9
        self._build_cost = self._svg_cost = 0.0
        self._svg_stale = True

    @property
    def run_id(self) -> str | None:
        """The id of the run this feed follows, once its journal said it."""
        rid = self._reader.state.run.get("run_id")
        return rid if isinstance(rid, str) else None

    async def run(self) -> None:
        stale = True
        while True:
            stale |= await asyncio.to_thread(self._reader.poll)
            self._svg_stale |= stale
            now = time.monotonic()
            due = self._built_at + max(MIN_INTERVAL, 4 * self._build_cost)
            if now >= due and (stale or now - self._built_at >= 1.0):  # elapsed times move too
                stale = False
                await self._publish(timeline=False)
                continue
            # news waits only until a state is due, not for the next poll after that
            await asyncio.sleep(min(POLL, due - now) if stale else POLL)

    async def refresh(self) -> None:
        """Read the journal and publish its state and timeline now (the last, at the end)."""
        await asyncio.to_thread(self._reader.poll)
        self._svg_stale = True
        await self._publish(timeline=True)

    async def _publish(self, *, timeline: bool) -> None:
        self._built_at = time.monotonic()
        text, snap, self._build_cost = await asyncio.to_thread(self._timed_build)
        self.text, self.version = text, self.version + 1
        self._wake()  # the state goes out while the timeline is drawn
        svg_due = time.monotonic() - self._svg_at >= max(TIMELINE_EVERY, 10 * self._svg_cost)
        if self._svg_stale and (timeline or svg_due):
            self._svg_at = time.monotonic()
            self.svg = await asyncio.to_thread(self._draw, snap)
            self._svg_cost = time.monotonic() - self._svg_at
            self.svg_version += 1
            self._svg_stale = False
        self._wake()

    def _wake(self) -> None:
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

    def picture(self) -> str:
        """The state and the timeline at once, ``{"state": ..., "timeline": ...}``: the page's
        view of a past run, read once (blocking: run it in a worker thread)."""
        self._reader.poll()
        text, snap = self._build()
        return f'{{"state": {text}, "timeline": {self._draw(snap)}}}'

    def _timed_build(self) -> tuple[str, Snapshot, float]:
        """`_build` and the CPU time it took (its share of the machine, however loaded)."""
        start = time.thread_time()
        text, snap = self._build()
        return text, snap, time.thread_time() - start

    def _build(self) -> tuple[str, Snapshot]:
        """The state message (JSON text), built in a worker thread."""
        alive = is_locked(self.rundir)
        snap = with_last_lines(from_journal(self._reader.state, alive=alive), self.responses)
        rows = board.task_rows(snap)
        state: dict[str, Any] = {
            "type": "state",
            "run": {k: snap.run.get(k) for k in ("plan", "state", "run_id", "started", "ended")},
            "alive": alive,
            "summary": board.summary(snap, rows, now=time.time()),
            "tasks": rows,
            "running": [
                {"id": a["id"], "task": a.get("task")}
                for a in snap.agents
                if a.get("state") == "running"
            ],
        }
        return json.dumps(state, default=str), snap

    def _draw(self, snap: Snapshot) -> str:
        graph = snap.extra.get("graph") or {}
        alive = snap.run.get("state") == "running"
        tl = timeline.build(snap.run, snap.agents, graph, now=time.time() if alive else None)
        svg = timeline.svg(tl, title=f"{snap.run.get('plan', '?')}: timeline")
        return json.dumps({"type": "timeline", "svg": svg})


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
