"""Workspace-confined tools for API agents: what the model may do, and nothing more.

Every path a model names goes through `Workspace.resolve`: lexically (no NUL, no ``..`` above
the root, no absolute path outside it), then for real (symlinks at any component resolved and
required to stay inside; writes refused under protected paths). The file is then opened from
the root one component at a time with ``O_NOFOLLOW``, so a symlink swapped in after the check
is refused rather than followed. Refusals raise `ToolError`, whose message is written for the
model to read; `dispatch` turns it (and bad arguments, unknown tools, failed system calls) into
an error result. It never raises for the model's mistakes.

File work runs in ``asyncio.to_thread``, one hop per tool call: each call is a short sequence of
system calls (``openat`` walk, ``fstat``, read or write) that aiofiles would spread over one
executor hop per call and could not express (no ``dir_fd``, no ``O_NOFOLLOW`` walk).
Whatever the input, a call is bounded: reads by size, walks by entries and by `TOOL_SECONDS`,
and patterns by RE2 (`orchestrator.tools.patterns`), whose matching is linear in the text, so
no regex or glob can hold a worker thread (and the GIL) for long. The shell tool is
`orchestrator.tools.shell`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.tools.patterns import compile_glob, compile_regex
from orchestrator.tools.workspace import ToolError, Workspace, os_error

READ_MAX_BYTES = 1 << 20
"""read_file reads at most this much of a file."""
READ_MAX_CHARS = 100_000
"""read_file returns at most this much text; ask again with ``offset`` for more."""
READ_DEFAULT_LINES = 2000
WRITE_MAX_BYTES = 5 << 20
LIST_MAX = 500
WALK_MAX_ENTRIES = 200_000
SEARCH_MAX_MATCHES = 100
SEARCH_MAX_FILE_BYTES = 1 << 20
SEARCH_MAX_LINE_CHARS = 300
BINARY_SNIFF = 8192
"""run_command keeps the first and the last half of this much output."""
SKIP_DIRS = frozenset({".git"})
"""Never listed or searched: noise for the model, and large."""
TOOL_SECONDS = 10.0
"""What one list_files or search call may take; past it, it answers with what it found."""


# --- file tools (synchronous: each runs whole in one worker thread) -------------------------


def _read_bytes(ws: Workspace, path: str, real: Path, limit: int) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of a regular file, and its size."""
    fd = ws.open_fd(real, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{path}: not a regular file")
        return f.read(limit), st.st_size


def _write_bytes(ws: Workspace, path: str, real: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK
    fd = ws.open_fd(real, flags, make_parents=True)
    with os.fdopen(fd, "wb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{path}: not a regular file")
        if st.st_nlink > 1:
            # A hard link may be another name of a file outside the workspace.
            raise ToolError(f"refused: {path} has other hard links; write a new file instead")
        f.truncate(0)
        f.write(data)


def _decode_text(path: str, data: bytes) -> str:
    if b"\x00" in data[:BINARY_SNIFF]:
        raise ToolError(f"{path}: binary file, not shown")
    return data.decode("utf-8", errors="replace")


def read_file(ws: Workspace, path: str, *, offset: int = 1, limit: int = READ_DEFAULT_LINES) -> str:
    """Lines ``offset`` .. ``offset + limit - 1`` (counted from 1) of a text file."""
    if offset < 1 or limit < 1:
        raise ToolError("offset and limit must be at least 1")
    real = ws.resolve(path, for_write=False)
    try:
        data, size = _read_bytes(ws, path, real, READ_MAX_BYTES)
    except OSError as e:
        raise os_error(path, e) from None
    lines = _decode_text(path, data).splitlines(keepends=True)
    if not lines:
        return f"({path} is empty)"
    if offset > len(lines):
        raise ToolError(f"{path} has {len(lines)} lines; offset {offset} is past the end")
    chosen = lines[offset - 1 : offset - 1 + limit]
    text = "".join(chosen)
    notes = []
    if len(text) > READ_MAX_CHARS:
        text = text[:READ_MAX_CHARS]
        shown = text.count("\n")
        notes.append(f"output cut at {READ_MAX_CHARS} characters (line {offset + shown})")
    last = offset + len(chosen) - 1
    if offset > 1 or last < len(lines):
        notes.append(f"lines {offset}-{last} of {len(lines)}; pass offset={last + 1} for more")
    if size > len(data):
        notes.append(f"the file has {size} bytes; only the first {len(data)} were read")
    if notes:
        text += ("" if text.endswith("\n") else "\n") + "[" + "; ".join(notes) + "]"
    return text


def write_file(ws: Workspace, path: str, content: str) -> str:
    """Create or replace a file (and its missing parent directories) inside the workspace."""
    data = content.encode("utf-8", errors="replace")
    if len(data) > WRITE_MAX_BYTES:
        raise ToolError(f"refused: content is {len(data)} bytes, more than {WRITE_MAX_BYTES}")
    real = ws.resolve(path, for_write=True)
    try:
        _write_bytes(ws, path, real, data)
    except OSError as e:
        raise os_error(path, e) from None
    return f"wrote {len(data)} bytes to {ws.display(real)}"


def edit_file(ws: Workspace, path: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old`` in a file by ``new``."""
    if not old:
        raise ToolError("old must not be empty (use write_file to create a file)")
    if old == new:
        raise ToolError("old and new are the same; nothing to change")
    real = ws.resolve(path, for_write=True)
    try:
        data, size = _read_bytes(ws, path, real, WRITE_MAX_BYTES + 1)
        if size > WRITE_MAX_BYTES:
            raise ToolError(f"{path}: too large to edit ({size} bytes)")
        text = _decode_text(path, data)
        count = text.count(old)
        if count == 0:
            raise ToolError(
                f"{path}: old text not found; read the file again and copy the text exactly, "
                "whitespace and indentation included"
            )
        if count > 1:
            lines = _occurrence_lines(text, old)
            raise ToolError(
                f"{path}: old text appears {count} times (lines {', '.join(map(str, lines))}); "
                "include more surrounding lines so that it matches exactly once"
            )
        _write_bytes(ws, path, real, text.replace(old, new, 1).encode("utf-8", "replace"))
    except OSError as e:
        raise os_error(path, e) from None
    return f"edited {ws.display(real)}: replaced 1 occurrence"


def _occurrence_lines(text: str, old: str, most: int = 10) -> list[int]:
    """The distinct line numbers (from 1) where ``old`` starts, the first ``most`` of them."""
    lines: list[int] = []
    start = text.find(old)
    while start >= 0 and len(lines) < most:
        line = text.count("\n", 0, start) + 1
        if not lines or lines[-1] != line:
            lines.append(line)
        start = text.find(old, start + 1)
    return lines


def _pattern(pattern: str) -> Any:
    if not isinstance(pattern, str) or not pattern or "\x00" in pattern:
        raise ToolError("the glob pattern is empty")
    pure = PurePosixPath(pattern)
    if pure.is_absolute() or ".." in pure.parts:
        raise ToolError(
            f"refused: pattern {pattern!r} must be relative to the workspace root, without '..'"
        )
    return compile_glob(pattern.removeprefix("./"))


class _Clock:
    """The time a walking tool may take: it stops at the next file or line once it is over."""

    __slots__ = ("deadline", "seconds", "stopped")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.stopped = False

    def over(self) -> bool:
        if not self.stopped and time.monotonic() >= self.deadline:
            self.stopped = True
        return self.stopped

    def note(self, what: str) -> str:
        return f"[stopped after {self.seconds:g} s; {what}]"


def _walk(ws: Workspace, clock: _Clock) -> Iterator[tuple[str, bool]]:
    """(relative path, is a symlink) of every non-directory, never descending into links.

    Directories count against `WALK_MAX_ENTRIES` too, and the walk ends when ``clock`` is over.
    """
    seen = 0
    for top, dirs, files in os.walk(ws.root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        seen += len(dirs)
        base = Path(top).relative_to(ws.root)
        # os.walk puts a symlink to a directory among the directories (and does not enter it).
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in sorted(files + links):
            seen += 1
            if seen > WALK_MAX_ENTRIES or clock.over():
                return
            rel = (base / name).as_posix()
            yield rel, os.path.islink(os.path.join(top, name))


def list_files(
    ws: Workspace, pattern: str = "**/*", *, limit: int = LIST_MAX, seconds: float = TOOL_SECONDS
) -> str:
    """Files (and symlinks) under the workspace whose relative path matches ``pattern``."""
    regex = _pattern(pattern)
    limit = max(1, min(limit, LIST_MAX))
    clock = _Clock(seconds)
    matches = sorted(rel for rel, _is_link in _walk(ws, clock) if regex.match(rel))
    stopped = clock.note("the list is incomplete; narrow the pattern") if clock.stopped else ""
    if not matches:
        hint = "" if "/" in pattern else f"; use '**/{pattern}' to look in subdirectories too"
        return f"no files match {pattern!r}{hint}" + (f"\n{stopped}" if stopped else "")
    found, more = matches[:limit], len(matches) - limit
    text = "\n".join(found)
    if more > 0:
        text += f"\n[{more} more not shown; narrow the pattern]"
    return text + (f"\n{stopped}" if stopped else "")


def search(
    ws: Workspace,
    regex: str,
    glob: str = "**/*",
    *,
    limit: int = SEARCH_MAX_MATCHES,
    seconds: float = TOOL_SECONDS,
) -> str:
    """Lines matching ``regex`` (RE2) in text files matching ``glob``, as ``path:line: text``.

    RE2 makes each match linear in the line's length; ``seconds`` bounds the whole search."""
    compiled = compile_regex(regex)
    paths = _pattern(glob)
    limit = max(1, min(limit, SEARCH_MAX_MATCHES))
    hits: list[str] = []
    clock = _Clock(seconds)
    for rel, is_link in _walk(ws, clock):
        if is_link or not paths.match(rel):
            continue  # links are not followed: their target may be outside
        try:
            data, size = _read_bytes(ws, rel, ws.root / rel, SEARCH_MAX_FILE_BYTES + 1)
        except (OSError, ToolError):
            continue  # vanished, unreadable or special: skipped like a binary file
        if size > SEARCH_MAX_FILE_BYTES or b"\x00" in data[:BINARY_SNIFF]:
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if number % 1024 == 0 and clock.over():
                break
            if compiled.search(line):
                hits.append(f"{rel}:{number}: {line[:SEARCH_MAX_LINE_CHARS]}")
                if len(hits) >= limit:
                    return "\n".join(hits) + f"\n[stopped at {limit} matches; narrow the search]"
    text = "\n".join(hits) if hits else f"no matches for {regex!r}"
    if clock.stopped:
        text += "\n" + clock.note("not every file was searched; narrow the glob")
    return text
