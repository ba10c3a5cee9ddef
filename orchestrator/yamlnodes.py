"""Marked nodes (values that remember their line and column): reading YAML and TOML into them,
and typed reads out of them that record every problem instead of stopping at the first.

PyYAML's composer and constructor are recursive (the C composer crashes the whole process on a
deeply nested document), expand every alias into fresh objects (a "billion laughs" file eats all
memory) and silently keep the last of two equal mapping keys. So YAML is read from the parser's
event stream instead, without recursion: nesting deeper than `MAX_DEPTH` and aliases that would
stand for more than `MAX_ALIAS_NODES` nodes are refused the moment they appear, duplicate keys are
reported, and an alias becomes a second reference to the same node (nothing is copied).

tomllib gives no positions, so TOML values are placed by searching the text (best effort: the
table header, then the ``key =`` line). `planfile` validates both through the same nodes.
"""

from __future__ import annotations

import bisect
import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import yaml

from orchestrator.errors import Location, PlanError

MAX_DEPTH = 64
"""Collections nested deeper than this are refused (a real plan needs about 8)."""
MAX_ALIAS_NODES = 500_000
"""How many nodes all aliases together may stand for; a billion-laughs file passes it at once."""

MAX_DURATION = 30 * 24 * 3600.0
"""Longer waits are typos, and would overflow the event loop's timers."""
MAX_NUMBER = 1e9
"""Larger limits and counts are typos (and would not survive a round trip through float)."""

ScalarValue: TypeAlias = str | int | float | bool | None

_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_TEXT_TAGS = frozenset({_STR, _TIMESTAMP, _MERGE})
"""Kept as text: a date in a plan is a name or a prompt, not a datetime."""


# --- nodes ------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Scalar:
    """A single value; ``text`` is how it was written (``0755`` stays ``0755``)."""

    value: ScalarValue
    text: str
    line: int
    col: int
    size: int = 1
    broken: bool = False
    """Already reported as unreadable; typed reads treat it as absent."""


@dataclass(eq=False, slots=True)
class Seq:
    items: list[Node]
    line: int
    col: int
    size: int = 1
    broken: bool = False


@dataclass(eq=False, slots=True)
class Map:
    """A mapping with text keys; ``keys`` says where each key is written."""

    items: dict[str, Node]
    line: int
    col: int
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    size: int = 1
    broken: bool = False


Node: TypeAlias = Scalar | Seq | Map


# --- YAML -------------------------------------------------------------------------------------


class _Stop(Exception):
    """The document cannot be read any further; carries the error that says why."""

    def __init__(self, error: PlanError) -> None:
        super().__init__(error.render())
        self.error = error


@dataclass(eq=False, slots=True)
class _Open:
    """A collection whose end event has not come yet."""

    node: Seq | Map
    anchor: str | None
    size: int = 1
    key: str | None = None
    key_at: tuple[int, int] = (0, 0)
    wants_key: bool = False
    """A mapping whose next node is a key (its text is kept as written, never resolved)."""
    merges: list[tuple[Node, tuple[int, int]]] = field(default_factory=list)


class _Reader:
    """Builds nodes from YAML parser events with an explicit stack (no recursion)."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.errors: list[PlanError] = []
        self.stack: list[_Open] = []
        self.anchors: dict[str, Node] = {}
        self.open_anchors: set[str] = set()
        self.expanded = 0
        self.documents = 0
        self.root: Node | None = None
        self.loader = _Loader(text)
        self.resolve: Callable[[type[yaml.Node], str, tuple[bool, bool]], str]
        self.resolve = self.loader.resolve
        resolvers = self.loader.yaml_implicit_resolvers
        self.resolvable = None if None in resolvers else frozenset(resolvers)
        """First characters that may make a plain scalar something other than text."""

    def error(self, at: tuple[int, int], rule: str, message: str, hint: str = "") -> PlanError:
        return PlanError(Location(self.path, at[0], at[1]), rule, message, hint)

    def read(self) -> Node | None:
        get_event, stack = self.loader.get_event, self.stack
        try:
            while True:
                event = get_event()
                if type(event) is yaml.ScalarEvent:
                    frame = stack[-1] if stack else None
                    if frame is not None and frame.wants_key and event.anchor is None:
                        self.key(frame, event)  # the most common event: kept cheap
                    else:
                        self.scalar(event)
                elif type(event) is yaml.MappingEndEvent or type(event) is yaml.SequenceEndEvent:
                    self.end()
                elif isinstance(event, yaml.CollectionStartEvent):
                    self.start(event)
                elif type(event) is yaml.AliasEvent:
                    self.alias(event)
                elif type(event) is yaml.DocumentStartEvent:
                    self.document(event)
                elif event is None or type(event) is yaml.StreamEndEvent:
                    return self.root
        finally:
            self.loader.dispose()

    # --- events -------------------------------------------------------------------------------

    def document(self, event: yaml.DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            raise _Stop(
                self.error(
                    _at(event),
                    "syntax",
                    "a plan file holds one YAML document, this is a second one",
                    "remove the '---' line, or split the plan into two files",
                )
            )

    def key(self, frame: _Open, event: yaml.ScalarEvent) -> None:
        """A plain mapping key: kept as written (``on:`` stays "on"), never resolved."""
        at = _at(event)
        frame.wants_key, frame.key_at = False, at
        frame.size += 1
        frame.key = self.key_text(event.value, at, frame)

    def scalar(self, event: yaml.ScalarEvent) -> None:
        text = event.value
        at = _at(event)
        node = Scalar(text, text, at[0], at[1])
        if not (self.stack and self.stack[-1].wants_key):  # an anchored key is not resolved either
            tag = event.tag
            if tag is None or tag == "!":
                plain = event.implicit[0]
                if plain and (self.resolvable is None or not text or text[0] in self.resolvable):
                    tag = self.resolve(yaml.ScalarNode, text, event.implicit)
                else:
                    tag = _STR
            if tag not in _TEXT_TAGS:
                self.construct(node, tag)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        self.attach(node, at)

    def construct(self, node: Scalar, tag: str) -> None:
        """Turn the text of ``node`` into a number, true/false or null, as its tag says."""
        at = (node.line, node.col)
        if tag not in (_INT, _FLOAT, _BOOL, _NULL):
            node.broken = True
            message = f"YAML tag {_short(tag)} is not allowed in a plan"
            self.errors.append(self.error(at, "unsupported-tag", message))
            return
        try:
            construct = self.loader.yaml_constructors[tag]
            node.value = construct(self.loader, yaml.ScalarNode(tag, node.text))
        except (ValueError, OverflowError):  # e.g. more digits than Python converts
            node.broken = True
            self.errors.append(self.error(at, "bad-value", f"{show(node.text)} is not a number"))

    def start(self, event: yaml.CollectionStartEvent) -> None:
        at = _at(event)
        if len(self.stack) >= MAX_DEPTH:
            raise _Stop(
                self.error(
                    at,
                    "too-deep",
                    f"collections are nested more than {MAX_DEPTH} levels deep",
                    "a plan needs only a few levels; was this file generated by mistake?",
                )
            )
        mapping = type(event) is yaml.MappingStartEvent
        node: Seq | Map = Map({}, at[0], at[1]) if mapping else Seq([], at[0], at[1])
        if event.tag not in (None, "!", _MAP if mapping else _SEQ):
            node.broken = True
            message = f"YAML tag {_short(event.tag or '')} is not allowed in a plan"
            self.errors.append(self.error(at, "unsupported-tag", message))
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Open(node, event.anchor, wants_key=mapping))

    def end(self) -> None:
        frame = self.stack.pop()
        node = frame.node
        node.size = frame.size
        if isinstance(node, Map) and frame.merges:
            self.merge(node, frame.merges)
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = node
        self.attach(node, (node.line, node.col))

    def alias(self, event: yaml.AliasEvent) -> None:
        name, at = event.anchor or "", _at(event)
        if name in self.open_anchors:
            message = f"alias *{name} refers to a node that holds it"
            raise _Stop(self.error(at, "recursive-alias", message))
        target = self.anchors.get(name)
        if target is None:
            raise _Stop(self.error(at, "syntax", f"alias *{name} names no anchor defined before"))
        self.expanded += target.size
        if self.expanded > MAX_ALIAS_NODES:
            raise _Stop(
                self.error(
                    at,
                    "alias-bomb",
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                    "this looks like a 'billion laughs' document; write the plan out plainly",
                )
            )
        self.attach(target, at)

    # --- building -----------------------------------------------------------------------------

    def attach(self, node: Node, at: tuple[int, int]) -> None:
        if not self.stack:
            self.root = node
            return
        frame = self.stack[-1]
        frame.size += node.size
        parent = frame.node
        if isinstance(parent, Seq):
            parent.items.append(node)
        elif frame.wants_key:
            frame.wants_key, frame.key_at = False, at
            if isinstance(node, Scalar):
                frame.key = self.key_text(node.text, at, frame)
            else:
                self.errors.append(self.error(at, "wrong-type", "a mapping key must be plain text"))
        else:
            key, frame.wants_key, frame.key = frame.key, True, None
            if key == "<<":
                frame.merges.append((node, frame.key_at))
            elif key is not None:
                parent.items[key] = node
                parent.keys[key] = frame.key_at

    def key_text(self, key: str, at: tuple[int, int], frame: _Open) -> str | None:
        """``key``, or None (after an error) when the mapping already has it."""
        written = frame.node.keys if isinstance(frame.node, Map) else {}
        if key not in written and not (key == "<<" and frame.merges):
            return key
        first = written[key][0] if key in written else frame.merges[0][1][0]
        message = f"key {show(key)} appears twice in one mapping"
        hint = f"the first {show(key)} is on line {first}"
        self.errors.append(self.error(at, "duplicate-key", message, hint))
        return None

    def merge(self, node: Map, merges: list[tuple[Node, tuple[int, int]]]) -> None:
        """Apply ``<<: *base`` merge keys: keys written in the mapping itself win."""
        for source, at in merges:
            for item in source.items if isinstance(source, Seq) else [source]:
                if not isinstance(item, Map):
                    message = "'<<' merges mappings only (<<: *anchor)"
                    self.errors.append(self.error(at, "wrong-type", message))
                    continue
                for key, value in item.items.items():
                    if key not in node.items:
                        node.items[key] = value
                        node.keys[key] = item.keys[key]


def read_yaml(text: str, path: str) -> tuple[Node | None, list[PlanError]]:
    """Parse ``text`` into marked nodes; None for an empty document. Never raises for bad input."""
    reader = _Reader(text, path)
    try:
        root = reader.read()
    except _Stop as stop:
        return None, [*reader.errors, stop.error]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            what = f"{exc.problem} ({exc.context})"
        return None, [*reader.errors, reader.error(at, "syntax", f"YAML: {what}")]
    except yaml.reader.ReaderError as exc:
        at = _line_col(text, exc.position)
        what = f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason})"
        if not isinstance(exc.character, int):
            what = f"YAML: {exc.reason}"
        return None, [*reader.errors, reader.error(at, "syntax", what)]
    except yaml.YAMLError as exc:
        return None, [*reader.errors, reader.error((0, 0), "syntax", f"YAML: {exc}")]
    return root, reader.errors


def _at(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark else (0, 0)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# --- TOML -------------------------------------------------------------------------------------

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
        return None, [PlanError(Location(path, *at), rule, f"TOML: {what}")]
    except RecursionError:
        return None, [PlanError(Location(path), "too-deep", "arrays or tables are nested too deep")]
    except ValueError:  # an integer with more digits than Python converts
        message = "TOML: a number has more digits than can be read"
        return None, [PlanError(Location(path), "bad-value", message)]
    placer = _TomlPlacer(text, path)
    try:
        return placer.table(data, (1, 1), 0, "", placer.keys_in(1, placer.next_header(0) - 1)), []
    except _Stop as stop:
        return None, [stop.error]


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
            raise _Stop(PlanError(Location(self.path, *at), "too-deep", message))

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


# --- errors and typed reads -----------------------------------------------------------------

_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?\s*(?:ms|s|m|h|d)\s*)+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HINT = "write seconds (90) or a duration like 500ms, 90s, 20m, 1h30m"


def parse_duration(text: str) -> float | None:
    """Seconds in ``90``, ``500ms``, ``90s``, ``20m``, ``1h30m`` or ``2d``; None if not one."""
    s = text.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", s):
        return float(s)
    if not _DURATION.fullmatch(s):
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(s))


class Errors:
    """Every problem found so far in one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[PlanError] = []

    def add(self, at: Node | tuple[int, int], rule: str, message: str, hint: str = "") -> None:
        line, col = at if isinstance(at, tuple) else (at.line, at.col)
        self.items.append(PlanError(Location(self.path, line, col), rule, message, hint))


def show(value: str | float) -> str:
    """A value for a message: text quoted and escaped, numbers bare, both cut short."""
    text = value if isinstance(value, str) else str(value)
    short = text[:40] + "..." if len(text) > 40 else text
    return repr(short) if isinstance(value, str) else short


def kind(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    if node.value is None:
        return "nothing (null)"
    if isinstance(node.value, bool):
        return "true/false"
    return "text" if isinstance(node.value, str) else "a number"


def closest(word: str, choices: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {found[0]!r}?" if found else ""


class Fields:
    """Typed reads of one mapping's fields; every problem is recorded, absent fields are None."""

    def __init__(
        self,
        errs: Errors,
        node: Map,
        allowed: tuple[str, ...],
        owner: str,
        synonyms: Mapping[str, str] | None = None,
    ) -> None:
        self.errs, self.node, self.owner = errs, node, owner
        for key in node.items:
            if key not in allowed:
                meant = (synonyms or {}).get(key)
                hint = f"did you mean {meant!r}?" if meant in allowed else closest(key, allowed)
                hint = hint or "allowed here: " + ", ".join(allowed)
                message = f"{owner}: unknown field {show(key)}"
                errs.add(node.keys[key], "unknown-field", message, hint)

    def __contains__(self, key: str) -> bool:
        return key in self.node.items

    def get(self, key: str) -> Node | None:
        """The field's node; None when absent, null (``key:`` alone) or already reported."""
        node = self.node.items.get(key)
        if node is None or node.broken or (isinstance(node, Scalar) and node.value is None):
            return None
        return node

    def wrong(self, key: str, node: Node, wanted: str, hint: str = "") -> None:
        self.errs.add(
            node, "wrong-type", f"{self.owner}: {key} must be {wanted}, not {kind(node)}", hint
        )

    def text(self, key: str) -> str | None:
        node = self.get(key)
        return None if node is None else text_of(self.errs, node, f"{self.owner}: {key}")

    def flag(self, key: str) -> bool | None:
        node = self.get(key)
        if node is None:
            return None
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.wrong(key, node, "true or false")
        return None

    def number(
        self, key: str, *, least: float, above: bool, rule: str, whole: bool = False
    ) -> float | None:
        """A number from ``least`` (or just above it) up to `MAX_NUMBER`."""
        node = self.get(key)
        if node is None:
            return None
        value = node.value if isinstance(node, Scalar) else None
        if not isinstance(value, int if whole else int | float) or isinstance(value, bool):
            self.wrong(key, node, "a whole number" if whole else "a number")
            return None
        # Compared, never converted first: float() of a 400-digit integer raises OverflowError.
        if not (least < value if above else least <= value) or not value <= MAX_NUMBER:
            low = f"{'more than' if above else 'at least'} {least:g}"
            bound = f"at most {MAX_NUMBER:,.0f}" if value > MAX_NUMBER else low
            message = f"{self.owner}: {key} must be {bound}, not {show(value)}"
            self.errs.add(node, rule, message)
            return None
        return value if whole else float(value)

    def count(self, key: str, *, least: int, rule: str = "bad-value") -> int | None:
        value = self.number(key, least=least, above=False, rule=rule, whole=True)
        return None if value is None else int(value)

    def duration(
        self, key: str, *, zero_ok: bool = False, rule: str = "bad-duration"
    ) -> float | None:
        node = self.get(key)
        what = f"{self.owner}: {key}"
        return (
            None if node is None else duration_of(self.errs, node, what, zero_ok=zero_ok, rule=rule)
        )

    def names(self, key: str, what: str) -> list[tuple[str, Node]] | None:
        """A list of names, each with where it is written."""
        node = self.get(key)
        if node is None:
            return None
        if not isinstance(node, Seq):
            self.wrong(key, node, f"a list of {what}", f"write {key}: [a, b]")
            return None
        out = []
        for item in node.items:
            text = text_of(self.errs, item, f"{self.owner}: {key} entry")
            if text is not None:
                out.append((text, item))
        return out


def text_of(errs: Errors, node: Node, what: str) -> str | None:
    """Any single value, as it was written (``model: 4`` is "4"); lists and mappings are refused."""
    if node.broken:
        return None
    if not isinstance(node, Scalar) or node.value is None:
        errs.add(node, "wrong-type", f"{what} must be text, not {kind(node)}")
        return None
    if "\x00" in node.text:
        errs.add(node, "bad-value", f"{what} contains a NUL character")
        return None
    return node.text


def mapping_of(errs: Errors, node: Node | None, what: str) -> Map | None:
    if node is None or isinstance(node, Map):
        return node
    errs.add(node, "wrong-type", f"{what} must be a mapping, not {kind(node)}")
    return None


def duration_of(errs: Errors, node: Node, what: str, *, zero_ok: bool, rule: str) -> float | None:
    """Seconds from a number or a duration text, within (0 or more than 0) .. `MAX_DURATION`."""
    if node.broken:
        return None
    value = node.value if isinstance(node, Scalar) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        wanted = "a duration (seconds, or text like 90s, 20m, 1h30m)"
        errs.add(node, "wrong-type", f"{what} must be {wanted}, not {kind(node)}")
        return None
    seconds = parse_duration(value) if isinstance(value, str) else value
    shown = show(value)
    if seconds is None or seconds != seconds:  # not a duration, or NaN
        errs.add(node, "bad-duration", f"{what}: {shown} is not a duration", _DURATION_HINT)
    elif seconds < 0 or (seconds == 0 and not zero_ok):
        errs.add(node, rule, f"{what} must be more than zero, not {shown}", _DURATION_HINT)
    elif seconds > MAX_DURATION:  # also infinity and integers too long for a float
        errs.add(node, "bad-duration", f"{what} is longer than 30 days ({shown})")
    else:
        return float(seconds)
    return None
