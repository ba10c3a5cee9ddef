"""Progress files: ``<agent_id>.md`` for people and ``<agent_id>.events.jsonl`` for machines.

One writer per run owns every file. Events are rendered into an in-memory buffer at once
(``append`` is synchronous and cheap) and written out in batches: by a flusher task every
``interval`` seconds, and whenever an agent ends. The writes themselves (create, append) are
handed to ``submit``: during a run, the run's writer thread (`orchestrator.records.writer`),
which carries them out in order off the loop; else they are carried out at once. Whoever
tells anyone that an agent ended waits for that thread first, so what an agent said is on
disk before anyone is told.

Writes are small plain ``os.write`` calls on files opened with ``O_NOFOLLOW`` inside the
responses directory. No descriptor is held between flushes, so 10,000 live agents do not
need 20,000 open files.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator import ids
from orchestrator.events import (
    AgentEvent,
    Output,
    Text,
    Usage,
    event_to_dict,
)
from orchestrator.process.lines import Stream
from orchestrator.records.jsonl import json_line, json_string, now
from orchestrator.records.render import clean, output_mark, render, status_line_of
from orchestrator.records.rundir import write_all

DEFAULT_CAP = 50 * 1024 * 1024
MAX_PARTIAL = 64 * 1024
"""Text without a newline is cut into lines this long: an endless line stays bounded."""
_LINE_KEY = '"line":'
"""Where an `Output` record's line goes in its JSON (`ProgressWriter.output`)."""
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO in place must not block us
_OPEN_APPEND = os.O_WRONLY | os.O_APPEND | _OPEN
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN

Write = Callable[[], None]
OnFailure = Callable[[str, OSError], None]
"""Told when a progress file cannot be written (a full disk, a file-size limit, a tampered
file): the path and the error. The writer itself goes on; the data is counted as lost."""


def _raise(path: str, exc: OSError) -> None:
    raise exc


class Submit(Protocol):
    """Where writes go (`orchestrator.records.writer.FileWriter.submit`): each names the agent
    whose files it writes, and ``last`` is its status line (journaled after it)."""

    def __call__(self, write: Write, key: str, /, *, last: bool = False) -> None: ...


def _at_once(write: Write, key: str, /, *, last: bool = False) -> None:
    write()


def safe_path(responses: Path, name: str) -> Path:
    """``responses/name``, refusing any name that could leave the directory."""
    return Path(_safe_join(str(responses), name))


def _safe_join(responses: str, name: str) -> str:
    if not ids.is_file_name(name):
        raise ValueError(f"refusing unsafe progress file name {name!r}")
    return os.path.join(responses, name)


def open_regular(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """Open a file in the responses directory: never through a link, never blocking on a
    FIFO, and only if it is a regular file (else `OSError` saying what it is)."""
    fd = os.open(path, flags | _OPEN, mode)
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if kind != stat.S_IFREG:
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


@dataclass(slots=True)
class _File:
    """One agent's two files and what is buffered for them.

    An idle agent's holds no path strings (they are joined when written: the directory is
    shared, the name checked at `ProgressWriter.open`) and no empty buffers or dicts."""

    dir: str
    t0: float
    key: str
    """The agent's id: its writes are carried out in order."""
    md_buf: list[str] | None = None
    js_buf: list[str] | None = None
    partial: str = ""
    md_bytes: int = 0
    js_bytes: int = 0
    capped: frozenset[str] = frozenset()
    """The paths whose cap was reached (the writer thread's; shared empty until one is)."""
    lost: dict[str, tuple[int, str]] | None = None
    """Per path: bytes that could not be written and why; said once a write succeeds."""
    broken: bool = False
    """The files could not be created: nothing more is tried."""

    @property
    def md(self) -> str:
        # Joined as `os.path.join` would (the key is a checked file name), at a fifth of its
        # cost: the writer thread joins each path at every write it carries out.
        return f"{self.dir}/{self.key}.md"

    @property
    def jsonl(self) -> str:
        return f"{self.dir}/{self.key}.events.jsonl"

    def md_buffer(self) -> list[str]:
        if self.md_buf is None:
            self.md_buf = []
        return self.md_buf

    def js_buffer(self) -> list[str]:
        if self.js_buf is None:
            self.js_buf = []
        return self.js_buf

    def lost_map(self) -> dict[str, tuple[int, str]]:
        if self.lost is None:
            self.lost = {}
        return self.lost


class ProgressWriter:
    """The single writer of every progress file of one run.

    A write that fails (``ENOSPC``, ``EFBIG``, a file swapped for a FIFO) is taken back to
    whole lines, counted as lost, and reported through ``on_failure`` (which raises by
    default); the next write that succeeds says how much is missing.
    """

    def __init__(
        self,
        responses: Path,
        *,
        cap: int = DEFAULT_CAP,
        interval: float = 0.05,
        on_failure: OnFailure = _raise,
    ) -> None:
        self.responses = responses
        self._dir = str(responses)
        self.cap = cap
        self.interval = interval
        self.on_failure = on_failure
        self._files: dict[str, _File] = {}
        self._dirty: dict[str, _File] = {}
        self.submit: Submit = _at_once
        """Where writes go, each with the agent whose files it writes: carried out at once, or
        the run's writer thread (in order for each agent)."""

    def open(self, agent_id: str, header: str) -> str:
        """Create (truncate) the agent's files and write the header at once."""
        # The sidecar's name is the longer one: when it is a safe file name, so is the .md's
        # (the same characters and a shorter suffix). Checked once; `_File` joins the paths.
        _safe_join(self._dir, f"{agent_id}.events.jsonl")
        f = _File(dir=self._dir, t0=time.monotonic(), key=agent_id)
        self._files[agent_id] = f
        # A partial of the plain function: two objects while it waits, where a closure is five.
        self.submit(functools.partial(ProgressWriter._create, self, f, header), agent_id)
        return f.md

    def _create(self, f: _File, header: str) -> None:
        for path, text in ((f.md, header), (f.jsonl, "")):
            try:
                fd = open_regular(path, _OPEN_NEW)
                try:
                    write_all(fd, text.encode("utf-8", "replace"))
                finally:
                    os.close(fd)
            except OSError as exc:
                f.broken = True
                self.on_failure(path, exc)
                return
        f.md_bytes = len(header.encode("utf-8", "replace"))

    def append(self, agent_id: str, event: AgentEvent) -> str:
        """Buffer one event; returns the rendered text (for last-line displays)."""
        f = self._files[agent_id]
        text = clean(render(event))
        stamp = f"[+{time.monotonic() - f.t0:7.2f}s] "
        if isinstance(event, Text):
            text = f.partial + text
            *whole, f.partial = text.split("\n")
            while len(f.partial) > MAX_PARTIAL:  # an endless line, cut into bounded ones
                whole.append(f.partial[:MAX_PARTIAL])
                f.partial = f.partial[MAX_PARTIAL:]
            f.md_buffer().extend(stamp + line + "\n" for line in whole)
        else:
            # A usage report (the model gateway's, from another thread) may arrive while the
            # agent's text line is still open: it goes before that line, never into it.
            if f.partial and not isinstance(event, Usage):
                f.md_buffer().append(stamp + f.partial + "\n")
                f.partial = ""
            if "\n" not in text:  # most events: one line
                f.md_buffer().append(stamp + text + "\n")
            else:
                f.md_buffer().extend(stamp + line + "\n" for line in text.split("\n"))
        record = event_to_dict(event)
        record["t"] = now()
        f.js_buffer().append(json_line(record))
        self._dirty[agent_id] = f
        if "\n" not in text:
            return text if text.strip() else ""
        return next((ln for ln in reversed(text.split("\n")) if ln.strip()), "")

    def output(
        self, agent_id: str, stream: Stream, lines: Sequence[str], *, keep: int
    ) -> list[str]:
        """Buffer lines a program printed, as `append` would one `Output` each (the same bytes
        in both files), with one stamp and one time: they arrived in one read. Returns the
        last ``keep`` of them as shown.

        A line that is not plain printable text (a tab, a newline put in by the caller) goes
        through `append`, which cleans it."""
        tail = max(len(lines) - keep, 0)
        if not lines:
            return []
        if not all(map(str.isprintable, lines)):
            return [self.append(agent_id, Output(line, stream)) for line in lines][tail:]
        f = self._files[agent_id]
        mark = output_mark(stream)
        stamp = f"[+{time.monotonic() - f.t0:7.2f}s] "
        self._end_partial(f, stamp)
        head = stamp + mark
        f.md_buffer().append(head + ("\n" + head).join(lines) + "\n")
        record = event_to_dict(Output("", stream))
        record["t"] = now()
        layout = json_line(record)  # the encoder's own, the line left empty
        at = layout.index(_LINE_KEY + '""') + len(_LINE_KEY)
        before, after = layout[:at], layout[at + 2 :]
        f.js_buffer().extend([before + json_string(line) + after for line in lines])
        self._dirty[agent_id] = f
        return [mark + line for line in lines[tail:]]

    def note(self, agent_id: str, line: str) -> None:
        """A line from the orchestrator itself (a denial, a link to a fixer) in the .md only.

        Every line of it is stamped: words it quotes from an agent cannot start a line."""
        f = self._files[agent_id]
        stamp = f"[+{time.monotonic() - f.t0:7.2f}s] "
        self._end_partial(f, stamp)
        f.md_buffer().extend(stamp + part + "\n" for part in clean(line).split("\n"))
        self._dirty[agent_id] = f

    def finish(self, agent_id: str, status_line: str, record: dict[str, object]) -> None:
        """Write everything buffered plus the final ``status:`` line, then forget the agent."""
        f = self._files[agent_id]
        self._end_partial(f, f"[+{time.monotonic() - f.t0:7.2f}s] ")
        self._write(f, md_last=status_line_of(status_line), js_last=json_line(record))
        self._dirty.pop(agent_id, None)
        del self._files[agent_id]

    @staticmethod
    def _end_partial(f: _File, stamp: str) -> None:
        if f.partial:
            f.md_buffer().append(stamp + f.partial + "\n")
            f.partial = ""

    def flush(self, agent_id: str) -> None:
        f = self._dirty.pop(agent_id, None)
        if f is not None:
            self._write(f)

    def flush_all(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for f in dirty.values():
            self._write(f)

    async def run_flusher(self) -> None:
        """Flush every ``interval`` until cancelled (lives in the run's TaskGroup)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                self.flush_all()
        finally:
            self.flush_all()

    def _write(self, f: _File, *, md_last: str = "", js_last: str = "") -> None:
        md, f.md_buf = f.md_buf or (), None
        js, f.js_buf = f.js_buf or (), None
        write = functools.partial(self._write_out, f, md, js, md_last, js_last)
        self.submit(write, f.key, last=bool(md_last))

    def _write_out(
        self, f: _File, md: Sequence[str], js: Sequence[str], md_last: str, js_last: str
    ) -> None:
        if f.broken:
            return
        if md or md_last:
            f.md_bytes += self._append(f, f.md, "".join(md), f.md_bytes, md_last)
        if js or js_last:
            f.js_bytes += self._append(f, f.jsonl, "".join(js), f.js_bytes, js_last)

    def _append(self, f: _File, path: str, text: str, written: int, last: str) -> int:
        """Append ``text`` within the cap, then ``last`` (a final status) whatever the cap.

        When the disk refuses the whole, ``last`` is tried alone (with the note of what is
        missing): a few hundred bytes often still fit where the rest did not."""
        data = text.encode("utf-8", "replace")
        tail = last.encode("utf-8", "replace")
        room = self.cap - written - len(tail)
        if len(data) > room:
            marker = b"" if path in f.capped else self._marker(f, path, "truncated")
            f.capped |= {path}
            data = _whole_lines(data[: max(room - len(marker), 0)]) + marker
        lost = f.lost.pop(path, None) if f.lost else None
        if lost is not None:
            data = self._marker(f, path, "lost", *lost) + data
        if not data and not tail:
            return 0
        try:
            fd = open_regular(path, _OPEN_APPEND)
        except FileNotFoundError:
            return 0  # the user removed it; never recreate a file someone else may own now
        except OSError as exc:
            self._lost(f, path, len(data) + len(tail), exc)
            return 0
        try:
            try:
                write_all(fd, data + tail)
                return len(data) + len(tail)
            except OSError as exc:
                self._lost(f, path, len(data), exc)
                if not tail:
                    return 0
            size, why = f.lost_map().pop(path)
            note = self._marker(f, path, "lost", size, why)
            try:
                write_all(fd, note + tail)
            except OSError:
                f.lost_map()[path] = (size + len(tail), why)
                return 0
            return len(note) + len(tail)
        finally:
            os.close(fd)

    def _lost(self, f: _File, path: str, size: int, exc: OSError) -> None:
        lost = f.lost_map()
        lost[path] = (lost.get(path, (0, ""))[0] + size, exc.strerror or str(exc))
        self.on_failure(path, exc)

    def _marker(self, f: _File, path: str, what: str, size: int = 0, why: str = "") -> bytes:
        """The line that says a file is incomplete: text in the .md, a record in the .jsonl."""
        name = os.path.basename(path)
        if path == f.jsonl:
            record: dict[str, object] = {"event": what, "t": now()}
            more = {"cap": self.cap} if what == "truncated" else {"bytes": size, "error": why}
            record.update(more)
            return json_line(record).encode()
        if what == "truncated":
            return f"\n…[truncated: {name} reached its {self.cap} byte cap]\n".encode()
        return f"…[{size} bytes of progress could not be written: {why}]\n".encode()


def _whole_lines(data: bytes) -> bytes:
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""
