"""Reading TOML into marked nodes (see `plannodes`), with positions found in the text.

tomllib gives values but no positions, so each value is placed by searching the text, best
effort: a table by its ``[header]`` (or ``[[header]]`` for the n-th entry of an array of tables),
then a key by the ``key =`` line (dotted keys too) under that header, or by ``key =`` inside an
inline table on the line where the table starts.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from typing import Any, TypeAlias

from orchestrator.errors import Location, PlanError
from orchestrator.plan.nodes import MAX_DEPTH, Map, Node, Scalar, Seq, StopReading

_KEY_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY_PARTS = re.compile(_KEY_PART)
_LINE_KEY = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER = re.compile(rf"\s*\[(\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?\s*(?:#.*)?")
_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")

Where: TypeAlias = dict[str, tuple[int, int]]
"""Dotted key path -> where it is written, for the ``key =`` lines of one table."""


def read_toml(text: str, path: str) -> tuple[Node | None, list[PlanError]]:
    """Parse TOML into marked nodes. tomllib gives no positions, so lines are found in the text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_AT.search(message)
        at = (int(found[1]), int(found[2])) if found and found[1] else (text.count("\n") + 1, 1)
        what = message[: found.start()] if found else message
        rule = (
            "duplicate-key" if what.startswith(("Cannot overwrite", "Cannot declare")) else "syntax"
        )
        return None, [PlanError(Location(path, *at), rule, f"TOML: {what}", _hint(what))]
    except RecursionError:
        return None, [PlanError(Location(path), "too-deep", "arrays or tables are nested too deep")]
    except ValueError:  # an integer with more digits than Python converts
        message = "TOML: a number has more digits than can be read"
        return None, [PlanError(Location(path), "bad-value", message)]
    placer = _TomlPlacer(text, path)
    try:
        return placer.table(data, (1, 1), 0, "", placer.keys_in(1, placer.next_header(0) - 1)), []
    except StopReading as stop:
        return None, [stop.error]


_HINTS = (
    ("Illegal character '\\n'", "a string is not closed: add the closing quote on this line"),
    ("Unterminated string", "a string is not closed: add the closing quote"),
    ("Invalid value", 'text values need quotes: name = "demo"; lists use [ ], tables { }'),
    ("Expected '=' after a key", "each line is key = value; a key with spaces needs quotes"),
    ("Illegal character '\\t'", "use spaces, not tabs, inside values"),
)


def _hint(what: str) -> str:
    """The likely cause of a TOML syntax error, where it is a common one; else ""."""
    return next((hint for start, hint in _HINTS if what.startswith(start)), "")


class _TomlPlacer:
    """Best-effort positions for TOML values: table headers, then ``key =`` lines after them."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.tables: dict[str, list[int]] = {}
        self.arrays: dict[str, list[int]] = {}
        self.header_lines: list[int] = []
        for number, line in enumerate(self.lines, 1):
            found = _HEADER.fullmatch(line) if line.lstrip().startswith("[") else None
            if found:
                name = ".".join(_unquote(part) for part in _KEY_PARTS.findall(found[2]))
                (self.arrays if found[1] else self.tables).setdefault(name, []).append(number)
                self.header_lines.append(number)

    def next_header(self, line: int) -> int:
        """The first header line after ``line`` (one past the end if none)."""
        i = bisect.bisect_right(self.header_lines, line)
        return self.header_lines[i] if i < len(self.header_lines) else len(self.lines) + 1

    def in_region(self, header: int) -> Where:
        return self.keys_in(header + 1, self.next_header(header) - 1)

    def keys_in(self, first: int, last: int) -> Where:
        """Where each ``a.b.c =`` that starts a line from ``first`` to ``last`` is written."""
        found: Where = {}
        for number in range(first, min(last, len(self.lines)) + 1):
            line = self.lines[number - 1]
            head, equals, _ = line.partition("=")
            key = head.strip()
            if equals and key.isidentifier():  # the common case: a bare key, found cheaply
                found.setdefault(key, (number, len(head) - len(head.lstrip()) + 1))
                continue
            match = _LINE_KEY.match(line)
            if not match:
                continue
            at = (number, match.start(1) + 1)
            parts = [_unquote(part) for part in _KEY_PARTS.findall(match[1])]
            for i in range(1, len(parts) + 1):
                found.setdefault(".".join(parts[:i]), at)
        return found

    def node(self, value: object, at: tuple[int, int], depth: int, name: str) -> Node:
        """A value found inline at ``at`` (tables from headers are placed by `table`)."""
        if isinstance(value, dict):
            return self.table(value, at, depth, name, None)
        if isinstance(value, list):
            return self.array(value, at, depth, name)
        if isinstance(value, bool):
            return Scalar(value, "true" if value else "false", *at)
        if isinstance(value, int | float | str):
            return Scalar(value, str(value), *at)
        return Scalar(str(value), str(value), *at)  # dates and times: kept as text

    def table(
        self,
        value: dict[str, object],
        at: tuple[int, int],
        depth: int,
        name: str,
        written: Where | None,
        prefix: str = "",
    ) -> Map:
        """A table: under a header (``written`` holds its lines), dotted (``prefix``), or inline."""
        self.check_depth(depth, at)
        out = Map({}, *at)
        for key, child in value.items():
            path = prefix + key
            key_at = (written or {}).get(path) or self.inline_key(key, at[0]) or at
            out.keys[key] = key_at
            if isinstance(child, str):  # the common case, kept cheap
                out.items[key] = Scalar(child, child, *key_at)
                continue
            child_name = f"{name}.{key}" if name else key
            if not isinstance(child, dict):
                out.items[key] = self.node(child, key_at, depth + 1, child_name)
            elif written and path in written:  # `a.b = 1` or `a = {b = 1}`
                out.items[key] = self.table(
                    child, key_at, depth + 1, child_name, written, path + "."
                )
            elif (header := self.header_after(child_name, at[0])) is not None:
                key_at = out.keys[key] = (header, 1)
                region = self.in_region(header)
                out.items[key] = self.table(child, key_at, depth + 1, child_name, region)
            else:
                out.items[key] = self.table(child, key_at, depth + 1, child_name, None)
        return out

    def check_depth(self, depth: int, at: tuple[int, int]) -> None:
        if depth > MAX_DEPTH:
            message = f"arrays or tables are nested more than {MAX_DEPTH} levels deep"
            raise StopReading(PlanError(Location(self.path, *at), "too-deep", message))

    def header_after(self, name: str, line: int) -> int | None:
        """The line of the first ``[name]`` header at or after ``line``."""
        headers = self.tables.get(name, ())
        i = bisect.bisect_left(headers, line)
        return headers[i] if i < len(headers) else None

    def array(self, value: list[object], at: tuple[int, int], depth: int, name: str) -> Seq:
        """An array: of tables under ``[[name]]`` headers after ``at``, or written inline."""
        self.check_depth(depth, at)
        out = Seq([], *at)
        headers = self.arrays.get(name, [])
        first = bisect.bisect_left(headers, at[0])
        cursor = at
        for i, item in enumerate(value):
            if isinstance(item, dict) and first + i < len(headers):
                line = headers[first + i]
                out.items.append(self.table(item, (line, 1), depth + 1, name, self.in_region(line)))
                continue
            if isinstance(item, dict):
                cursor = self.find_item(item, cursor)
            out.items.append(self.node(item, cursor, depth + 1, name))
        return out

    def inline_key(self, key: str, line: int) -> tuple[int, int] | None:
        """``key =`` inside an inline table on ``line``."""
        if not 0 < line <= len(self.lines):
            return None
        text = self.lines[line - 1]
        for form in (key, f'"{key}"', f"'{key}'"):
            match = re.search(rf"(?:^|[{{,])\s*({re.escape(form)})\s*=", text)
            if match:
                return line, match.start(1) + 1
        return None

    def find_item(self, item: dict[Any, object], after: tuple[int, int]) -> tuple[int, int]:
        """Where an inline table in an array starts: found by its id (or name), else by ``{``."""
        label = item.get("id", item.get("name"))
        needles = (f'"{label}"', f"'{label}'") if isinstance(label, str) else ("{",)
        line, start = after
        for number in range(line, min(line + 5000, len(self.lines) + 1)):
            text = self.lines[number - 1]
            for needle in needles:
                col = text.find(needle, start if number == line else 0)
                if col >= 0:
                    return number, col + 1
        return after


def _unquote(part: str) -> str:
    return part[1:-1] if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'" else part
