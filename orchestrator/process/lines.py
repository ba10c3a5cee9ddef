"""Lines from children and agents made safe: split with a byte cap, decoded, cleaned.

A hostile child can print anything: megabyte lines, invalid UTF-8, terminal escapes, bidi
overrides. What reaches a progress file or a terminal is one clean line at a time.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Literal, TypeAlias

DEFAULT_MAX_LINE = 64 * 1024
Stream: TypeAlias = Literal["stdout", "stderr"]
"""Which pipe of a child a line came from."""

_UNSAFE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks, clipboard
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # any other escape sequence, or a lone ESC
    # C0 controls but tab, DEL, C1 controls (8-bit CSI is \x9b), bidi overrides, and the
    # Unicode line separators that str.splitlines() would split a progress line on.
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def clean_line(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (tab stays).

    The carriage return of a CRLF line end goes with the other control characters.
    """
    if text.isprintable():  # the common case, in C: no ESC, no control, no separator
        return text
    return _UNSAFE.sub("", text)


_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` as one clean line: line breaks become spaces, escapes and controls go.

    For what must stay on one line wherever it came from (a status line's reason, a table
    cell); ``limit`` cuts it to that many characters, ending in ``…``."""
    flat = clean_line(_BREAKS.sub(" ", text)) if not text.isprintable() else text
    if limit is not None and len(flat) > limit:
        flat = flat[: max(limit - 1, 0)] + "…"
    return flat


class LineSplitter:
    """Bytes in, clean bounded lines out; memory stays under ``max_line`` bytes per stream.

    ``emit`` gets the lines each `feed` ends as one list, in order (never an empty one): a
    chunk of a thousand lines costs its consumer one call, not a thousand."""

    __slots__ = ("_buf", "_dropped", "_emit", "_max")

    def __init__(self, emit: Callable[[list[str]], None], max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._emit = emit
        self._max = max_line
        self._buf = bytearray()
        self._dropped = 0

    def feed(self, data: bytes, max_lines: int | None = None) -> bytes:
        """Take ``data``, deliver the lines it ends; returns what it did not get to.

        That is ``b""`` unless ``max_lines`` lines were delivered first: then the caller feeds
        the rest later.
        """
        parts = data.split(b"\n", -1 if max_lines is None else max_lines)
        if max_lines is not None and len(parts) > max_lines:
            rest, partial = parts.pop(), b""  # max_lines complete lines, the rest unsplit
        else:
            rest, partial = b"", parts.pop()  # every line, then the start of the next one
        if self._buf or self._dropped or (len(data) > self._max and _longest(parts) > self._max):
            lines = []
            for part in parts:
                if self._buf or self._dropped or len(part) > self._max:
                    self._add(part)
                    lines.append(self._end_line())
                else:
                    lines.append(_text(part))
        else:  # the common case: whole lines within one chunk
            lines = [clean_line(part.decode("utf-8", "replace")) for part in parts]
        if partial:
            self._add(partial)
        if lines:
            self._emit(lines)
        return rest

    def flush(self) -> None:
        """End the stream: a last line without a newline is delivered too."""
        if self._buf or self._dropped:
            self._emit([self._end_line()])

    def _add(self, part: bytes) -> None:
        room = self._max - len(self._buf)
        if len(part) <= room:
            self._buf += part
        else:
            self._buf += part[:room]
            self._dropped += len(part) - room

    def _end_line(self) -> str:
        raw, dropped = bytes(self._buf), self._dropped
        self._buf.clear()
        self._dropped = 0
        if not dropped:
            return _text(raw)
        # Cut before a character split by the limit rather than show a replacement char.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(raw, final=False)
        dropped += len(decoder.getstate()[0])
        return f"{clean_line(text)} …[truncated {dropped} bytes]"


def _text(raw: bytes) -> str:
    return clean_line(raw.decode("utf-8", errors="replace"))


def _longest(parts: list[bytes]) -> int:
    return max(map(len, parts), default=0)
