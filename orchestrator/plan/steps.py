"""The steps of a scripted agent (``script:``, ``retry_script:``) read from a plan's nodes.

A step is a mapping with one key: ``say``, ``run``, ``block`` and ``fail`` take text, ``sleep``
a duration, ``write`` a ``{path, content}`` mapping whose path must stay inside the workspace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from orchestrator.plan.fields import Errors, Fields, closest, duration_of, text_of
from orchestrator.plan.model import STEP_NAMES, Block, Fail, Run, Say, Sleep, Step, Write
from orchestrator.plan.nodes import Map, Node, Seq, kind, show

_TEXT_STEPS: dict[str, Callable[[str], Step]] = {
    "say": Say,
    "run": Run,
    "block": Block,
    "fail": Fail,
}


def script_of(f: Fields, key: str) -> tuple[Step, ...] | None:
    """The steps under ``key`` (None when absent); a step that cannot be read is left out."""
    node = f.get(key)
    if node is None:
        return None
    if not isinstance(node, Seq):
        f.wrong(key, node, "a list of steps", "write one step a line:  - say: hello")
        return None
    steps = (_step(f.errs, item, f"{f.owner}: {key}") for item in node.items)
    return tuple(step for step in steps if step is not None)


def _step(errs: Errors, node: Node, what: str) -> Step | None:
    if not isinstance(node, Map) or len(node.items) != 1:
        message = f"{what}: a step is a mapping with one key, like `say: hello`"
        errs.add(node, "bad-step", message, "steps: " + ", ".join(STEP_NAMES))
        return None
    ((name, value),) = node.items.items()
    if name not in STEP_NAMES:
        hint = closest(name, STEP_NAMES) or "steps: " + ", ".join(STEP_NAMES)
        errs.add(node.keys[name], "unknown-step", f"{what}: unknown step {show(name)}", hint)
        return None
    what = f"{what}: {name}"
    if name == "sleep":
        seconds = duration_of(errs, value, what, zero_ok=True, rule="bad-duration")
        return None if seconds is None else Sleep(seconds)
    if name == "write":
        return _write(errs, value, what)
    text = text_of(errs, value, what)
    if text is None:
        return None
    if name == "run" and not text.strip():
        errs.add(value, "bad-command", f"{what}: the command is empty")
        return None
    return _TEXT_STEPS[name](text)


def _write(errs: Errors, node: Node, what: str) -> Write | None:
    if not isinstance(node, Map):
        message = f"{what} must be a mapping {{path, content}}, not {kind(node)}"
        errs.add(node, "wrong-type", message)
        return None
    f = Fields(errs, node, ("path", "content"), what)
    path, content = f.text("path"), f.text("content")
    for key in ("path", "content"):
        if key not in f:
            errs.add(node, "missing-field", f"{what} needs {key}")
    if path is None or content is None:
        return None
    parts = PurePosixPath(path.replace("\\", "/")).parts
    absolute = path.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", path)
    if absolute or not parts or ".." in parts:
        message = f"{what}: path {show(path)} is not inside the workspace"
        errs.add(node.items["path"], "bad-path", message, "write a relative path like src/app.py")
        return None
    return Write(path, content)
