"""The durable record of a run: an append-only JSON-lines journal under ``.run/``.

Every state transition is appended (one ``os.write`` of one whole line) *before* it is acted
on or reported. Nothing is fsynced per event: a syncer task fsyncs at most every
``interval`` seconds off the loop, so a transition is durable within about that long while
the hot path costs a few microseconds. A crash can tear only the last line, which `load`
ignores, so the journal always loads.

Records are partial updates merged by key: ``{"k": "run", ...}`` for the run,
``{"k": "agent", "id": ..., ...}`` per agent and ``{"k": "task", "id": ..., ...}`` per task.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL_NAME = "journal.jsonl"
_RAW_CONTROLS = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What JSON may carry raw but a terminal or ``str.splitlines`` would act on: DEL and C1
controls, the Unicode line separators, bidi overrides. Below 0x20 JSON escapes itself."""


def json_line(record: dict[str, Any]) -> str:
    """One record as one JSON line that is only data, whatever its strings hold."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    if not text.isprintable():  # the common case skips the regex
        text = _RAW_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
    return text + "\n"


class Journal:
    """Appends records to one journal file; one per run, owned by the scheduler."""

    def __init__(self, path: Path, *, fresh: bool, interval: float = 0.05) -> None:
        self.path = path
        self.interval = interval
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        if fresh:
            flags |= os.O_TRUNC
        self._fd: int | None = os.open(path, flags, 0o644)
        self._dirty = False
        self.records = 0

    def record(self, rec_type: str, /, **fields: Any) -> None:
        """Append one record now (a few microseconds); durable within ``interval``."""
        if self._fd is None:
            return
        fields["k"] = rec_type
        fields["t"] = round(time.time(), 6)
        os.write(self._fd, json_line(fields).encode("utf-8", "replace"))
        self._dirty = True
        self.records += 1

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    async def run_syncer(self) -> None:
        """fsync in a worker thread every ``interval`` while there is something new."""
        import asyncio  # here, not at the top: `status` reads journals and must start fast

        try:
            while True:
                await asyncio.sleep(self.interval)
                if self._dirty and self._fd is not None:
                    self._dirty = False
                    await asyncio.to_thread(os.fsync, self._fd)
        finally:
            self.sync()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


@dataclass
class JournalState:
    """What a journal says, folded: the run and the latest fields of every agent and task."""

    run: dict[str, Any] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    torn: int = 0


def load(path: Path) -> JournalState:
    """Fold a journal; torn or corrupt lines are counted and skipped, never fatal."""
    reader = JournalReader(path)
    reader.poll()
    reader.finish()
    return reader.state


class JournalReader:
    """Folds a journal incrementally: each `poll` reads only what was appended since the last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = JournalState()
        self._offset = 0
        self._partial = b""

    def poll(self) -> bool:
        """Read new records; True when anything changed."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._offset:  # a fresh run truncated it
                    self.state, self._offset, self._partial = JournalState(), 0, b""
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return False
        if not data:
            return False
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._fold(raw)
        return True

    def finish(self) -> None:
        """Fold a last line that has no newline (a torn write counts as torn)."""
        if self._partial:
            self._fold(self._partial)
            self._partial = b""

    def _fold(self, raw: bytes) -> None:
        state = self.state
        try:
            rec = json.loads(raw)
        except ValueError:
            state.torn += 1
            return
        if not isinstance(rec, dict):
            state.torn += 1
            return
        kind = rec.pop("k", None)
        rec.pop("t", None)
        if kind == "run":
            state.run.update(rec)
        elif kind in ("agent", "task", "build") and isinstance(rec.get("id"), str):
            table = {"agent": state.agents, "task": state.tasks, "build": state.builds}[kind]
            table.setdefault(rec["id"], {}).update(rec)
