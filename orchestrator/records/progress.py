"""Progress files: ``<agent_id>.md`` for people and ``<agent_id>.events.jsonl`` for machines.

One writer per run owns every file. Events are rendered into an in-memory buffer at once
(``append`` is synchronous and cheap) and written out in batches: by a flusher task every
``interval`` seconds, and on demand by ``flush(agent_id)`` before the scheduler reports a
transition, so what an agent said is on disk before anyone is told it happened.

Writes are small plain ``os.write`` calls on files opened with ``O_NOFOLLOW`` inside the
responses directory; measured, batched plain writes reach ~500k lines/s against ~34k for a
thread hop per append (aiofiles), so the hot path does not hop threads. No descriptor is
held between flushes, so 10,000 live agents do not need 20,000 open files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import ids
from orchestrator.events import (
    AgentEvent,
    Blocked,
    BuildChecked,
    Failed,
    Finished,
    Output,
    Started,
    Text,
    ToolCall,
    ToolResult,
    Usage,
    event_to_dict,
)
from orchestrator.process.lines import clean_line

DEFAULT_CAP = 50 * 1024 * 1024
_OPEN_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def clean(text: str) -> str:
    """Text safe for a terminal and a file, line by line (newlines are kept)."""
    if "\n" not in text:
        return clean_line(text)
    return "\n".join(clean_line(line) for line in text.split("\n"))


def safe_path(responses: Path, name: str) -> Path:
    """``responses/name``, refusing any name that could leave the directory."""
    return Path(_safe_join(str(responses), name))


def _safe_join(responses: str, name: str) -> str:
    if not ids.is_file_name(name):
        raise ValueError(f"refusing unsafe progress file name {name!r}")
    return os.path.join(responses, name)


def status_line_of(text: str) -> str:
    """The last line of every progress file, after a blank line: ``status: <text>``.

    The one writer of it: `ProgressWriter.finish` for live agents, `end_file` for agents whose
    writer is gone. ``text`` is cleaned and kept to one line, so it cannot forge another."""
    return f"\nstatus: {clean(text).replace(chr(10), ' ')}\n"


def end_file(responses: Path, agent_id: str, text: str) -> bool:
    """End the progress file of an agent no writer has open (lost with its orchestrator);
    False when there is no such file (never created, removed, or a link)."""
    try:
        fd = os.open(safe_path(responses, f"{agent_id}.md"), _OPEN_APPEND)
    except (ValueError, OSError):
        return False
    try:
        os.write(fd, status_line_of(text).encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return True


def render(event: AgentEvent) -> str:
    """The human line for one event (without timestamp); Text may hold several lines."""
    match event:
        case Started(detail=detail, pid=pid):
            return f"started: {detail}" + (f" (pid {pid})" if pid else "")
        case Text(text=text):
            return text
        case ToolCall(name=name, summary=summary):
            return f"-> {name}: {summary}"
        case ToolResult(name=name, summary=summary, is_error=is_error):
            return f"<- {name}{' ERROR' if is_error else ''}: {summary}"
        case Output(line=line, stream=stream):
            return ("| " if stream == "stdout" else "! ") + line
        case Blocked(reason=reason):
            return f"BLOCKED: {reason}"
        case Usage(tokens_in=tin, tokens_out=tout, cost_usd=cost):
            return f"usage: {tin} in / {tout} out tokens, ${cost:.4f}"
        case Finished(summary=summary):
            return f"finished: {summary}" if summary else "finished"
        case Failed(error=error, kind=kind):
            return f"failed ({kind}): {error}"
        case BuildChecked(exit_code=code, command=command):
            return f"check: `{command}` exited {code}"


@dataclass(slots=True)
class _File:
    md: str
    jsonl: str
    t0: float
    md_buf: list[str] = field(default_factory=list)
    js_buf: list[str] = field(default_factory=list)
    partial: str = ""
    md_bytes: int = 0
    js_bytes: int = 0
    capped: set[str] = field(default_factory=set)


class ProgressWriter:
    """The single writer of every progress file of one run."""

    def __init__(self, responses: Path, *, cap: int = DEFAULT_CAP, interval: float = 0.05) -> None:
        self.responses = responses
        self._dir = str(responses)
        self.cap = cap
        self.interval = interval
        self._files: dict[str, _File] = {}
        self._dirty: dict[str, _File] = {}

    def open(self, agent_id: str, header: str) -> str:
        """Create (truncate) the agent's files and write the header at once."""
        md = _safe_join(self._dir, f"{agent_id}.md")  # str: no Path work on the hot path
        jsonl = _safe_join(self._dir, f"{agent_id}.events.jsonl")
        f = _File(md=md, jsonl=jsonl, t0=time.monotonic())
        self._files[agent_id] = f
        for path, text in ((md, header), (jsonl, "")):
            fd = os.open(path, _OPEN_NEW, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        f.md_bytes = len(header)
        return md

    def append(self, agent_id: str, event: AgentEvent) -> str:
        """Buffer one event; returns the rendered text (for last-line displays)."""
        f = self._files[agent_id]
        now = time.monotonic()
        text = clean(render(event))
        stamp = f"[+{now - f.t0:7.2f}s] "
        if isinstance(event, Text):
            text = f.partial + text
            *whole, f.partial = text.split("\n")
            f.md_buf.extend(stamp + line + "\n" for line in whole)
        else:
            # A usage report (the model gateway's, from another thread) may arrive while the
            # agent's text line is still open: it goes before that line, never into it.
            if f.partial and not isinstance(event, Usage):
                f.md_buf.append(stamp + f.partial + "\n")
                f.partial = ""
            f.md_buf.extend(stamp + line + "\n" for line in text.split("\n"))
        record = event_to_dict(event)
        record["t"] = round(time.time(), 6)
        f.js_buf.append(json.dumps(record, ensure_ascii=False) + "\n")
        self._dirty[agent_id] = f
        return next((ln for ln in reversed(text.split("\n")) if ln.strip()), "")

    def note(self, agent_id: str, line: str) -> None:
        """A line from the orchestrator itself (a denial, a link to a fixer) in the .md only."""
        f = self._files[agent_id]
        f.md_buf.append(f"[+{time.monotonic() - f.t0:7.2f}s] {clean(line)}\n")
        self._dirty[agent_id] = f

    def finish(self, agent_id: str, status_line: str, record: dict[str, object]) -> None:
        """Write everything buffered plus the final ``status:`` line, then forget the agent."""
        f = self._files[agent_id]
        if f.partial:
            f.md_buf.append(f.partial + "\n")
            f.partial = ""
        f.md_buf.append(status_line_of(status_line))
        f.js_buf.append(json.dumps(record, ensure_ascii=False) + "\n")
        self._write(f, final=True)
        self._dirty.pop(agent_id, None)
        del self._files[agent_id]

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

    def _write(self, f: _File, *, final: bool = False) -> None:
        md, f.md_buf = f.md_buf, []
        js, f.js_buf = f.js_buf, []
        if md:
            f.md_bytes += self._append(f, f.md, md, f.md_bytes, final=final)
        if js:
            f.js_bytes += self._append(f, f.jsonl, js, f.js_bytes, final=final)

    def _append(
        self, f: _File, path: str, lines: Iterable[str], written: int, *, final: bool
    ) -> int:
        data = "".join(lines).encode("utf-8", "replace")
        room = self.cap - written
        if len(data) > room:
            name = os.path.basename(path)
            marker = f"\n…[truncated: {name} reached its {self.cap} byte cap]\n".encode()
            if path in f.capped:
                marker = b""
            f.capped.add(path)
            # The final status line always lands, even past the cap.
            tail = data[-512:] if final else b""
            tail = tail[tail.find(b"\n") + 1 :] if tail else b""
            keep = max(room - len(marker) - len(tail), 0)
            data = _whole_lines(data[:keep]) + marker + tail
            if not data:
                return 0
        try:
            fd = os.open(path, _OPEN_APPEND)
        except FileNotFoundError:
            return 0  # the user removed it; never recreate a file someone else may own now
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return len(data)


def _whole_lines(data: bytes) -> bytes:
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


# --- reading (views and monitors) -------------------------------------------------------------


def last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a file, reading only its end (a peek must stay cheap)."""
    if n <= 0:
        return []
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        block = 4096
        data = b""
        while size > 0 and data.count(b"\n") <= n:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
            block *= 2
    return data.decode("utf-8", "replace").splitlines()[-n:]


_STAMP = re.compile(r"\[\+ *[0-9.]+s\] ")


def last_said(responses: Path, agent_id: str) -> str:
    """The last progress line of an agent, without its time stamp ("" when there is none)."""
    try:
        lines = last_lines(safe_path(responses, f"{agent_id}.md"), 3)
    except (OSError, ValueError):
        return ""
    text = next((ln for ln in reversed(lines) if ln.strip()), "")
    return _STAMP.sub("", text, count=1)[:200]
