"""The durable record of a run: an append-only JSON-lines journal under ``.run/``.

Every state transition is appended (one ``os.write`` of one whole line) *before* it is acted
on or reported: during a run the write is handed to the run's writer thread
(`orchestrator.records.writer`, in order with the progress files), and whatever acts on it
or reports it waits for that thread first. Nothing is fsynced per event: a syncer thread
fsyncs whenever something new was written (group commit: what arrives during one fsync goes
with the next), at most once per ``interval``, so a transition is durable within about
``interval`` plus one fsync while the loop pays a few microseconds per record. A crash can
tear only the last line: readers take a last line without its newline as absent, and a
journal continued by ``--resume`` starts its first record on a line of its own, so the
journal always loads.

A full disk must not keep the run from recording how it ended: `RESERVE` bytes past the end
are kept allocated (``fallocate`` with ``FALLOC_FL_KEEP_SIZE``), and when they can no longer be
renewed the journal reports a failure while the reserve still holds the run's last records.
A write that fails anyway is taken back to whole lines and reported, never raised mid-run.

Records are partial updates merged by key: ``{"k": "run", ...}`` for the run,
``{"k": "agent", "id": ..., ...}`` per agent and ``{"k": "task", "id": ..., ...}`` per task.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.process import libc
from orchestrator.records.jsonl import json_bytes, now
from orchestrator.records.rundir import open_run_file, write_all

JOURNAL_NAME = "journal.jsonl"
RESERVE = 128 * 1024
"""Bytes kept allocated past the journal's end, for the records of a run stopped by a full
disk (its agents' ends, the final run record); renewed when half of it is used."""
_FALLOC_FL_KEEP_SIZE = 1
OnFailure = Callable[[str, OSError], None]
Write = Callable[[], None]
_KEYED = frozenset({"agent", "task", "build"})
"""Records about one agent, task or build: written after what was submitted for its files."""


class Submit(Protocol):
    """Where a record's write goes (`orchestrator.records.writer.FileWriter.submit`)."""

    def __call__(
        self, write: Write, key: str | None = None, /, *, record: bool = False
    ) -> None: ...


def _raise(path: str, exc: OSError) -> None:
    raise exc


def _at_once(write: Write, key: str | None = None, /, *, record: bool = False) -> None:
    write()


def _libc_fallocate() -> Callable[..., int] | None:
    import ctypes  # here: `status` reads journals and must start fast

    types = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    return libc.function("fallocate", types, ctypes.c_int)


def reserve_space(fd: int, offset: int, length: int) -> None:
    """Allocate ``length`` bytes at ``offset`` without changing the file's size (Linux)."""
    fallocate = _libc_fallocate()
    if fallocate is None:
        raise OSError(errno.ENOSYS, "fallocate is not available")
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Journal:
    """Appends records to one journal file; one per run, owned by the scheduler.

    Failures (a full disk, a file-size limit, an fsync error) go to ``on_failure`` with the
    path; it raises by default (before a run starts, that is the right answer), and the
    recorder replaces it while a run goes on, which stops the run instead."""

    def __init__(
        self,
        path: Path,
        *,
        fresh: bool,
        interval: float = 0.005,
        on_failure: OnFailure = _raise,
    ) -> None:
        self.path = path
        self.interval = interval
        self.on_failure = on_failure
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND
        if fresh:
            flags |= os.O_TRUNC
        fd = open_run_file(path, flags)
        self._fd: int | None = fd
        try:
            self._size = os.fstat(fd).st_size
            # A torn last line (a crash mid-write): the next record starts on a line of its own.
            self._torn = self._size > 0 and os.pread(fd, 1, self._size - 1) != b"\n"
        except OSError:
            self.close()
            raise
        self._reserved: int | None = self._size
        self._synced = self._size
        """How much of the file the last fsync covered (the syncer's; ``_size`` is the
        writer's): each has one writer, so no lock is shared between them."""
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        """Wakes the syncer: rung by a write when the syncer waits for one, and to stop it.
        Not a lock: a thread holding one while it waits for the interpreter would hold up
        the other, and each wait for the interpreter is up to a switch interval."""
        self._idle = False
        self._stopping = False
        self.records = 0
        self._handed: deque[tuple[int, bytes]] = deque()
        """Records handed to ``submit`` and not written yet, numbered."""
        self._handed_over = 0
        self.submit: Submit = _at_once
        """Where writes go: carried out at once, or the run's writer thread (which writes a
        record in order with the records before it and after what was submitted for the files
        it is about, its ``id``: an agent's end after its status line)."""
        self._renew_reserve()

    def record(self, rec_type: str, /, **fields: Any) -> None:
        """Append one record (in order with the records before it, after the status line of
        the agent it is about); durable within about ``interval`` after it is written."""
        if self._fd is None:
            return
        fields["k"] = rec_type
        fields["t"] = now()
        data = json_bytes(fields)
        if self.submit is _at_once:
            self._append((data,))
            return
        about = fields.get("id") if rec_type in _KEYED else fields.get("agent")
        key = about if isinstance(about, str) else None  # None: after every write before it
        self._handed_over += 1
        self._handed.append((self._handed_over, data))
        self.submit(functools.partial(self._write_through, self._handed_over), key, record=True)

    def _write_through(self, upto: int) -> None:
        """Write every record handed over up to number ``upto`` that is not written yet, as
        one write (the writer thread calls only the last of records that may go together)."""
        handed = self._handed
        batch = []
        while handed and handed[0][0] <= upto:
            batch.append(handed.popleft()[1])
        if batch:
            self._append(batch)

    def _append(self, batch: Sequence[bytes]) -> None:
        if self._fd is None:
            return
        data = b"".join(batch)
        if self._torn:
            data = b"\n" + data
        try:
            write_all(self._fd, data)
        except OSError as exc:
            if len(batch) > 1:  # one by one: the first ones may still fit (the reserve)
                for one in batch:
                    self._append((one,))
                return
            self._failed(exc)
            return
        self._torn = False
        self._size += len(data)
        self.records += len(batch)
        if self._reserved is not None and self._reserved - self._size < RESERVE // 2:
            self._renew_reserve()
        if self._idle:
            self._bell.put(None)

    def _renew_reserve(self) -> None:
        if self._fd is None or self._reserved is None:
            return
        try:
            reserve_space(self._fd, self._size, RESERVE)
        except OSError as exc:
            self._reserved = None  # renewed no more: what is left of it holds the last records
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self._failed(exc)
            return
        self._reserved = self._size + RESERVE

    def _failed(self, exc: OSError) -> None:
        exc.filename = exc.filename or str(self.path)
        self.on_failure(str(self.path), exc)

    @property
    def size(self) -> int:
        """Bytes in the file, counted as they are written (the file's size, without a
        system call: counted once a write has returned)."""
        return self._size

    def fileno(self) -> int:
        """Its descriptor (`ValueError` once closed)."""
        if self._fd is None:
            raise ValueError("the journal is closed")
        return self._fd

    def sync(self) -> None:
        """fsync what was written since the last fsync, if anything was."""
        size = self._size
        if self._fd is not None and size != self._synced:
            self._synced = size
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._failed(exc)

    async def run_syncer(self) -> None:
        """Group commit on a thread of its own until cancelled (see the module)."""
        import asyncio  # here, not at the top: `status` reads journals and must start fast

        self._stopping = False
        thread = threading.Thread(target=self._sync_forever, name="journal-syncer", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stopping = True
            self._bell.put(None)
            try:
                await asyncio.shield(asyncio.to_thread(thread.join))
            finally:
                thread.join()
                self.sync()

    def _sync_forever(self) -> None:
        last = -self.interval
        while not self._stopping:  # the last sync is the caller's, after the last writes
            if self._size == self._synced:
                self._idle = True  # then look again: a write either sees it or is seen
                if self._size == self._synced and not self._stopping:
                    self._bell.get()
                self._idle = False
                continue
            # this thread's own pace: what is written meanwhile goes with this fsync
            if (pause := last + self.interval - time.monotonic()) > 0:
                with contextlib.suppress(queue.Empty):
                    self._bell.get(timeout=pause)  # rung only to stop it
                continue
            last = time.monotonic()
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
        """Read new records; True when anything changed.

        The journal is opened as every file of ``.run/`` is (`open_run_file`): a link, a FIFO
        or another user's file raises `RunDirRefused` instead of being read (or hanging)."""
        try:
            fd = open_run_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fd).st_size
            if size < self._offset:  # a fresh run truncated it
                self.state, self._offset, self._partial = JournalState(), 0, b""
            fh.seek(self._offset)
            data = fh.read()
        if not data:
            return False
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self._fold(raw)
        return True

    def finish(self) -> None:
        """The journal is read to its end: a last line without its newline is torn (a crash
        mid-write), counted and taken as absent, whatever it holds."""
        if self._partial:
            self.state.torn += 1
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
