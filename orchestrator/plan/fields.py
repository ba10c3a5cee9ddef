"""Typed reads of plan values out of marked nodes, recording every problem instead of stopping.

`Errors` collects the problems of one file; `Fields` reads the fields of one mapping (text,
flags, numbers in range, durations, lists of names) and reports unknown keys with a
did-you-mean hint. A value that is absent, null or already reported reads as None, so one
mistake is reported once and the checks that follow simply skip it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from orchestrator.errors import Location, PlanError
from orchestrator.plan.nodes import Map, Node, Scalar, Seq, kind, show

MAX_DURATION = 30 * 24 * 3600.0
"""Longer waits are typos, and would overflow the event loop's timers."""
MAX_NUMBER = 1e9
"""Larger limits and counts are typos (and would not survive a round trip through float)."""

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


def closest(word: str, choices: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {found[0]!r}?" if found else ""


RETIRED = {
    "shell": "a string command runs in a shell (sh -c), a list runs without one: "
    "write the command as one string and drop shell:",
}
"""Keys plans no longer take, with what to write instead."""


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
                hint = RETIRED.get(key, hint) if key not in allowed else hint
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
