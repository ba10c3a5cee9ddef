"""Load a plan file (YAML or TOML) into a `Plan`, or report every problem in it at once.

Reading never raises anything but `PlanErrors`: each `PlanError` carries the file, line and
column, a rule slug (``duplicate-id``, ``cycle``, ``unknown-field`` ...), a message and, where
one helps, a hint. Both formats become the same marked nodes first (`yamlnodes`, `tomlnodes`),
so the checks are written once: the sections in `plansettings`, the tasks in `plantasks` (their
shared keys in `taskfields`, scripted steps in `scriptsteps`), and here the plan as a whole and
its task graph. Nothing here touches anything but the plan file itself.
"""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import Location, PlanError, PlanErrors
from orchestrator.plan.fields import Errors, Fields, closest, mapping_of
from orchestrator.plan.graph import find_cycle
from orchestrator.plan.model import Plan
from orchestrator.plan.nodes import Map, Node, Scalar, kind, show
from orchestrator.plan.sections import (
    build_of,
    fixer_of,
    limits_of,
    notify_of,
    presets_of,
    prices_of,
    sandbox_of,
)
from orchestrator.plan.taskfields import defaults_of
from orchestrator.plan.tasks import Draft, tasks_of
from orchestrator.plan.toml_reader import read_toml
from orchestrator.plan.yaml_reader import read_yaml

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ERRORS = 200
"""Errors listed in full; a generated plan with one systematic mistake would print thousands."""

TOP_KEYS: tuple[str, ...] = (
    "name", "workspace", "create_workspace", "defaults", "limits", "build", "fixer", "tasks",
    "batches", "prices", "presets", "notify", "isolation", "deliver", "sandbox",
)  # fmt: skip
ISOLATION = ("auto", "worktree", "none")
DELIVER = ("branch", "apply")


# --- entry point ----------------------------------------------------------------------------


def load_plan(path: str | Path, *, workspace_override: Path | None = None) -> Plan:
    """Read, parse and validate the plan at ``path``; raise `PlanErrors` listing every problem.

    ``workspace`` in the file is relative to the file's directory (default: the current
    directory); ``workspace_override`` (the command line's ``--workspace``) beats both.
    """
    errs = Errors(str(path))
    source = Path(path)
    text = _read_text(source, errs)
    plan: Plan | None = None
    if text is not None:
        with _no_cyclic_gc():
            plan = _parse(errs, text, source, workspace_override)
    if errs.items or plan is None:
        raise PlanErrors(_first_errors(errs))
    return plan


def _first_errors(errs: Errors) -> list[PlanError]:
    """The errors by line; past `MAX_ERRORS`, one last line says how many more there are."""
    found = sorted(errs.items, key=lambda e: (e.where.line, e.where.col))
    if len(found) <= MAX_ERRORS:
        return found
    more = len(found) - MAX_ERRORS
    hint = "fix the ones above first; the rest are often the same mistake"
    last = PlanError(Location(errs.path), "too-many-errors", f"{more} more errors not shown", hint)
    return [*found[:MAX_ERRORS], last]


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cycle collector while building nodes: they form no cycles, and the collections
    that ~10^5 new objects would trigger take about half the time of loading a 10,000-task plan."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(errs: Errors, text: str, source: Path, override: Path | None) -> Plan | None:
    """TOML for ``.toml``; YAML for anything else (with a hint when the suffix is not YAML's)."""
    suffix = source.suffix.lower()
    reader = read_toml if suffix == ".toml" else read_yaml
    root, found = reader(text, errs.path)
    if found and found[-1].rule == "syntax" and suffix not in (".toml", ".yaml", ".yml"):
        last = found.pop()
        hint = last.hint or "plan files are YAML (.yaml, .yml) or TOML (.toml)"
        found.append(PlanError(last.where, last.rule, last.message, hint))
    errs.items.extend(found)
    if root is None or (isinstance(root, Scalar) and root.value is None and not root.broken):
        if not found:
            errs.add((1, 1), "empty-plan", "the plan file is empty", "add tasks: or batches:")
        return None
    return _plan(errs, root, source, override)


def _read_text(source: Path, errs: Errors) -> str | None:
    try:
        info = source.stat()
    except FileNotFoundError:
        near = _sibling(source)
        hint = f"did you mean {near}?" if near else "check the path"
        errs.add((0, 0), "file-not-found", "no such plan file", hint)
        return None
    except (OSError, ValueError) as exc:
        errs.add((0, 0), "unreadable", f"cannot read the plan file: {exc}")
        return None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        errs.add((0, 0), "not-a-file", f"the plan path is {what}", "name a .yaml or .toml file")
        return None
    try:
        with source.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        errs.add((0, 0), "unreadable", f"cannot read the plan file: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        errs.add((0, 0), "too-large", f"the plan file is larger than {MAX_FILE_BYTES} bytes")
        return None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8")) + 1  # valid: before the error
        bad = data[exc.start : exc.start + 1].hex()
        errs.add((line, col), "not-utf8", f"byte 0x{bad} is not UTF-8", "save the file as UTF-8")
        return None


def _sibling(source: Path) -> str | None:
    """The same name with another plan suffix, when such a file exists (plan.yml for plan.yaml)."""
    for suffix in (".yaml", ".yml", ".toml"):
        try:
            other = source.with_suffix(suffix)
            if other != source and other.is_file():
                return str(other)
        except (OSError, ValueError):  # no file name to change, or an unusable path
            return None
    return None


# --- the plan -------------------------------------------------------------------------------


def _plan(errs: Errors, root: Node, source: Path, override: Path | None) -> Plan | None:
    if not isinstance(root, Map):
        errs.add(root, "wrong-type", f"a plan must be a mapping (tasks: ...), not {kind(root)}")
        return None
    extensions = tuple(key for key in root.items if key.startswith("x-"))  # a home for anchors
    top = Fields(errs, root, TOP_KEYS + extensions, "plan")
    name = top.text("name")
    if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):
        message = f"plan name {show(name)} is not usable"
        errs.add(top.node.items["name"], "bad-name", message, "use up to 200 printable characters")
    defaults = defaults_of(errs, mapping_of(errs, top.get("defaults"), "defaults"))
    limits = limits_of(errs, mapping_of(errs, top.get("limits"), "limits"))
    prices = prices_of(errs, mapping_of(errs, top.get("prices"), "prices"))
    fixer = fixer_of(errs, mapping_of(errs, top.get("fixer"), "fixer"), defaults)
    presets = presets_of(errs, mapping_of(errs, top.get("presets"), "presets"))
    drafts, batches = tasks_of(errs, top, defaults)
    _check_graph(errs, drafts)
    names = {d.task.id for d in drafts} | {batch for batch, _ in batches}
    build = build_of(errs, mapping_of(errs, top.get("build"), "build"), names)
    workspace = _workspace(top.text("workspace"), source, override)
    isolation = _one_of(top, "isolation", ISOLATION) or "auto"
    deliver = _one_of(top, "deliver", DELIVER)
    return Plan(
        name=name if name is not None else source.stem,
        tasks=tuple(d.task for d in drafts),
        workspace=workspace,
        create_workspace=bool(top.flag("create_workspace")),
        notify=notify_of(errs, mapping_of(errs, top.get("notify"), "notify")),
        source=Path(os.path.abspath(source)),
        limits=limits,
        build=build,
        fixer=fixer,
        batches=batches,
        prices=prices,
        form="batches" if top.get("batches") is not None and top.get("tasks") is None else "tasks",
        presets=presets,
        isolation=isolation,  # type: ignore[arg-type]
        deliver=deliver,  # type: ignore[arg-type]
        sandbox=sandbox_of(
            errs, top.get("sandbox"), Path(os.path.dirname(os.path.abspath(source)))
        ),
    )


def _one_of(top: Fields, key: str, choices: tuple[str, ...]) -> str | None:
    value = top.text(key)
    if value is not None and value not in choices:
        message = f"{key} {show(value)} is not one of {', '.join(choices)}"
        top.errs.add(top.node.items[key], "bad-value", message, f"write {key}: {choices[0]}")
        return None
    return value


def _workspace(written: str | None, source: Path, override: Path | None) -> Path:
    """The command line beats the file, the file is relative to itself, else the current dir."""
    if override is not None:
        return Path(os.path.abspath(os.path.expanduser(override)))
    if written is not None:
        base = os.path.dirname(os.path.abspath(source))
        return Path(os.path.abspath(os.path.join(base, os.path.expanduser(written))))
    return Path(os.path.abspath(os.curdir))


# --- the graph ------------------------------------------------------------------------------


def _check_graph(errs: Errors, drafts: list[Draft]) -> None:
    """Duplicate ids, dependencies on nothing, and cycles (found in linear time)."""
    first: dict[str, Draft] = {}
    folded: dict[str, str] = {}
    for draft in drafts:
        tid = draft.task.id
        if tid in first:
            hint = f"the first is on line {first[tid].node.line}"
            errs.add(draft.node, "duplicate-id", f"task id {show(tid)} is used twice", hint)
            continue
        other = folded.setdefault(tid.lower(), tid)
        if other != tid:
            message = f"task ids {show(other)} and {show(tid)} differ only in case"
            hint = "their progress files would be one file on a case-insensitive disk"
            errs.add(draft.node, "duplicate-id", message, hint)
        first[tid] = draft
    hints_left = 20  # difflib is linear in the number of ids: suggest for the first few only
    for tid, draft in first.items():
        for dep, node in draft.deps or ():
            if dep not in first:
                hint = closest(dep, first) if hints_left > 0 else ""
                hints_left -= 1
                message = f"task {show(tid)} depends on {show(dep)}, which is not a task"
                errs.add(node, "unknown-dependency", message, hint)
    # A task that depends only on tasks written before it cannot close a cycle (implicit batch
    # dependencies always point back), so the full search runs only when some edge points ahead.
    order = {tid: i for i, tid in enumerate(first)}
    ahead = any(
        order.get(dep, -1) >= order[tid]
        for tid, draft in first.items()
        for dep, _ in draft.deps or ()
    )
    cycle = _cycle({t: d.task.depends_on for t, d in first.items()}) if ahead else None
    if cycle:
        node = first[cycle[0]].node
        at = node.keys.get("depends_on", (node.line, node.col))
        message = "tasks depend on each other in a cycle: " + " -> ".join(cycle)
        hint = "each task waits for the next; remove one of these dependencies"
        errs.add(at, "cycle", message, hint)


def _cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    """One cycle, or None. Kahn's algorithm peels off the acyclic part first, so that
    `find_cycle` (slow on tasks with many dependencies) only sees what is left."""
    waiting = dict.fromkeys(graph, 0)
    children: dict[str, list[str]] = {}
    for tid, deps in graph.items():
        for dep in deps:
            if dep in graph:
                waiting[tid] += 1
                children.setdefault(dep, []).append(tid)
    ready = [tid for tid, n in waiting.items() if n == 0]
    for tid in ready:
        for child in children.get(tid, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(ready) == len(graph):
        return None
    return find_cycle({tid: graph[tid] for tid, n in waiting.items() if n > 0})
