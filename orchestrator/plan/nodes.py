"""Marked nodes: the values of a plan file, each remembering the line and column it is written at.

`yamlnodes` and `tomlnodes` read the two formats into these nodes, `planfields` reads typed
values out of them, so every check after reading is written once for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from orchestrator.errors import PlanError

MAX_DEPTH = 64
"""Collections nested deeper than this are refused (a real plan needs about 8)."""

ScalarValue: TypeAlias = str | int | float | bool | None


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


class StopReading(Exception):
    """The document cannot be read any further; carries the error that says why."""

    def __init__(self, error: PlanError) -> None:
        super().__init__(error.render())
        self.error = error


def show(value: str | float) -> str:
    """A value for a message: text quoted and escaped, numbers bare, both cut short."""
    text = value if isinstance(value, str) else str(value)
    short = text[:40] + "..." if len(text) > 40 else text
    return repr(short) if isinstance(value, str) else short


def kind(node: Node) -> str:
    """What ``node`` is, for a message: "a list", "text", "true/false" ..."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    if node.value is None:
        return "nothing (null)"
    if isinstance(node.value, bool):
        return "true/false"
    return "text" if isinstance(node.value, str) else "a number"
