"""Reading YAML into marked nodes (see `plannodes`), safely and with every key's position.

PyYAML's composer and constructor are recursive (the C composer crashes the whole process on a
deeply nested document), expand every alias into fresh objects (a "billion laughs" file eats all
memory) and silently keep the last of two equal mapping keys. So YAML is read from the parser's
event stream instead, without recursion: nesting deeper than `MAX_DEPTH` and aliases that would
stand for more than `MAX_ALIAS_NODES` nodes are refused the moment they appear, duplicate keys are
reported, and an alias becomes a second reference to the same node (nothing is copied).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from orchestrator.errors import Location, PlanError
from orchestrator.plan.nodes import MAX_DEPTH, Map, Node, Scalar, Seq, StopReading, show

MAX_ALIAS_NODES = 500_000
"""How many nodes all aliases together may stand for; a billion-laughs file passes it at once."""

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
            raise StopReading(
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
            raise StopReading(
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
            raise StopReading(self.error(at, "recursive-alias", message))
        target = self.anchors.get(name)
        if target is None:
            message = f"alias *{name} names no anchor defined before"
            raise StopReading(self.error(at, "syntax", message))
        self.expanded += target.size
        if self.expanded > MAX_ALIAS_NODES:
            raise StopReading(
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
    except StopReading as stop:
        return None, [*reader.errors, stop.error]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            what = f"{exc.problem} ({exc.context})"
        hint = syntax_hint(text, at, what)
        return None, [*reader.errors, reader.error(at, "syntax", f"YAML: {what}", hint)]
    except yaml.reader.ReaderError as exc:
        at = _line_col(text, exc.position)
        what = f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason})"
        if not isinstance(exc.character, int):
            what = f"YAML: {exc.reason}"
        return None, [*reader.errors, reader.error(at, "syntax", what)]
    except yaml.YAMLError as exc:
        return None, [*reader.errors, reader.error((0, 0), "syntax", f"YAML: {exc}")]
    return root, reader.errors


def syntax_hint(text: str, at: tuple[int, int], what: str) -> str:
    """The likely cause of a YAML syntax error, where it is a common one; else ""."""
    lines = text.split("\n")
    line = lines[at[0] - 1] if 0 < at[0] <= len(lines) else ""
    if "\t" in line or ("cannot start any token" in what and "\t" in text):
        return "YAML indents with spaces, never tabs: replace the tab(s) on this line"
    if "mapping values are not allowed" in what:
        if line.count(":") > 1:
            return (
                "a value that holds ': ' must be quoted, e.g. prompt: \"Fix: the bug\" "
                "(or use a block: prompt: |)"
            )
        return "this line is indented more than the key before it: align it with its siblings"
    if "while scanning a quoted scalar" in what:
        return "a quoted value is not closed: add the closing quote (or use a block: |)"
    if "could not find expected ':'" in what:
        return "a key needs ': ' after it; a value that runs over lines needs quotes or a block"
    if "expected <block end>" in what:
        return "check the indentation: items of one list or mapping start in the same column"
    return ""


def _at(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark else (0, 0)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
