"""What the page is fed: the run's state, rebuilt when the journal grows, and progress files.

The same files `watch` and `tail -f` read: one `Feed` per server polls the journal and keeps
the latest state (a version number and the JSON text, built once for every client); each
client's sender reads it when it changes, so a slow client only ever skips to the newest
state and never holds anyone up. A client that asks for patches (the page does) gets the
whole state once, then only the rows that changed since the version it was sent: a run of
hundreds of tasks changes a few rows a tenth of a second, and sending and parsing the whole
table that often, for every page, was most of the delay before a page showed a change.
Progress files are read per client from the client's own offset, so a client that
reconnects catches up from where it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Frame:
    """One published state in parts, so a client can be sent only what changed since its own.

    ``rows`` maps each task to its row, the row's JSON and the version that last changed it,
    in plan order; ``order_version`` is the version that last changed the tasks or their
    order."""

    version: int = 0
    head: str = ""
    """The fields besides the rows: ``"run": ..., "alive": ..., "summary": ..., "running": ...``."""
    rows: dict[str, tuple[dict[str, Any], str, int]] = field(default_factory=dict)
    order_version: int = 0
    text: str = ""
    """The whole state message."""
    _patches: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    """Patches made so far, by the version they start from (most clients share one)."""

    def patch(self, since: int) -> str:
        """A ``patch`` message: what a client that has version ``since`` lacks of this one."""
        if (made := self._patches.get(since)) is not None:
            return made
        tasks = ",".join(text for _, text, v in self.rows.values() if v > since)
        order = f', "order": {json.dumps(list(self.rows))}' if self.order_version > since else ""
        made = self._patches[since] = f'{{"type": "patch", {self.head}, "tasks": [{tasks}]{order}}}'
        return made


def next_frame(
    last: Frame, head: dict[str, Any], rows: list[dict[str, Any]], version: int
) -> Frame:
    """The frame of ``version``: rows equal to the last frame's keep its JSON and version."""
    known = last.rows
    fresh: dict[str, tuple[dict[str, Any], str, int]] = {}
    for row in rows:
        old = known.get(row["id"])
        if old is None or old[0] != row:
            old = (row, json.dumps(row, default=str), version)
        fresh[row["id"]] = old
    order_version = last.order_version if list(fresh) == list(known) else version
    head_text = json.dumps(head, default=str)[1:-1]
    tasks = ",".join(text for _, text, _ in fresh.values())
    text = f'{{"type": "state", {head_text}, "tasks": [{tasks}]}}'
    return Frame(version, head_text, fresh, order_version, text)


class Feed:
    """The latest state of the run in ``responses``; `run` keeps it fresh until cancelled.

    ``text`` (the state) and ``svg`` (the timeline) are rebuilt in a worker thread, each at
    most as often as a few times its own build time, so however large the run, the page's
    share of the machine stays small: a slow build only means fewer, newer states. The state's
    build is timed in CPU, not wall time: on a crowded machine the wall time of the same work
    grows with the crowd, and spacing states by it held every page back (in B12, states
    p95 0.26-0.51 s apart instead of 0.1 s) without saving the run any CPU. News seen between
    states goes out as soon as the next one is due, not at the next poll after that.
    """

    def __init__(self, responses: Path) -> None:
        self.responses = responses
        self.rundir = RunDir(responses)
        self._reader = JournalReader(self.rundir.journal)
        self.frame = Frame()
        self._publishing = asyncio.Lock()
        self.svg_version = 0
        self.svg = ""
        self._changed = asyncio.Event()
        self._built_at = self._svg_at = -1e9
        self._build_cost = self._svg_cost = 0.0
        self._svg_stale = True

    @property
    def version(self) -> int:
        """The version of the latest state (0: none yet)."""
        return self.frame.version

    @property
    def text(self) -> str:
        """The latest state message, whole."""
        return self.frame.text

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
        async with self._publishing:  # one at a time: each frame is the last one's successor
            await self._publish_now(timeline=timeline)

    async def _publish_now(self, *, timeline: bool) -> None:
        self._built_at = time.monotonic()
        self.frame, snap, self._build_cost = await asyncio.to_thread(self._timed_build)
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
        frame, snap = self._build()
        return f'{{"state": {frame.text}, "timeline": {self._draw(snap)}}}'

    def _timed_build(self) -> tuple[Frame, Snapshot, float]:
        """`_build` and the CPU time it took (its share of the machine, however loaded)."""
        start = time.thread_time()
        frame, snap = self._build()
        return frame, snap, time.thread_time() - start

    def _build(self) -> tuple[Frame, Snapshot]:
        """The next frame (the state message and its parts), built in a worker thread."""
        alive = is_locked(self.rundir)
        snap = with_last_lines(from_journal(self._reader.state, alive=alive), self.responses)
        rows = board.task_rows(snap)
        head: dict[str, Any] = {
            "run": {k: snap.run.get(k) for k in ("plan", "state", "run_id", "started", "ended")},
            "alive": alive,
            "summary": board.summary(snap, rows, now=time.time()),
            "running": [
                {"id": a["id"], "task": a.get("task")}
                for a in snap.agents
                if a.get("state") == "running"
            ],
        }
        return next_frame(self.frame, head, rows, self.frame.version + 1), snap

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
