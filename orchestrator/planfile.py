"""Load a plan file (YAML or TOML) into a `Plan`, or report every problem in it at once.

Reading never raises anything but `PlanErrors`: each `PlanError` carries the file, line and
column, a rule slug (``duplicate-id``, ``cycle``, ``unknown-field`` ...), a message and, where
one helps, a hint. Both formats become the same marked nodes first (see `yamlnodes`), so the
checks below are written once. Nothing here touches anything but the plan file itself.
"""

from __future__ import annotations

import gc
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.errors import Location, PlanError, PlanErrors
from orchestrator.plan import (
    AGENT_KINDS,
    PRESETS,
    STEP_NAMES,
    Block,
    Build,
    Fail,
    FixerSpec,
    Limits,
    Plan,
    Price,
    Run,
    Say,
    Sleep,
    Step,
    Task,
    Write,
    find_cycle,
)
from orchestrator.yamlnodes import (
    Errors,
    Fields,
    Map,
    Node,
    Scalar,
    Seq,
    closest,
    duration_of,
    kind,
    mapping_of,
    read_toml,
    read_yaml,
    show,
    text_of,
)

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ERRORS = 200
"""Errors listed in full; a generated plan with one systematic mistake would print thousands."""
DEFAULT_AGENT = "claude"
"""The agent of a task when neither the task nor ``defaults`` names one (as in DESIGN.md)."""

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTEMPT_SUFFIX = re.compile(r".*\.[0-9]+")

_ENV_HINT = "use letters, digits and '_', not starting with a digit"
_ID_HINT = "ids are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_KINDS = sorted(AGENT_KINDS | PRESETS)
_TOP_KEYS: tuple[str, ...] = (
    "name", "workspace", "defaults", "limits", "build", "fixer", "tasks", "batches", "prices",
)  # fmt: skip
_DEFAULT_KEYS: tuple[str, ...] = (
    "agent", "model", "timeout", "stall_timeout", "max_turns", "env", "pass_env",
)  # fmt: skip
_LIMIT_KEYS: tuple[str, ...] = (
    "max_concurrency", "max_agents", "max_depth", "budget_usd", "spawn_rate", "grace",
)  # fmt: skip
_BUILD_KEYS = ("command", "timeout", "max_fix_cycles", "after")
_FIXER_KEYS: tuple[str, ...] = (
    "agent", "model", "prompt", "command", "shell", "script", "timeout", "stall_timeout",
    "max_turns",
)  # fmt: skip
_TASK_KEYS: tuple[str, ...] = (
    "id", "agent", "prompt", "depends_on", "command", "shell", "script", "retry_script", "model",
    "timeout", "stall_timeout", "max_turns", "env", "pass_env",
)  # fmt: skip
_MEANT = {"name": "id", "cmd": "command", "args": "command", "steps": "script"}
_MEANT |= dict.fromkeys(("deps", "needs", "requires", "after", "depends"), "depends_on")
_TEXT_STEPS: dict[str, Callable[[str], Step]] = {
    "say": Say,
    "run": Run,
    "block": Block,
    "fail": Fail,
}
_RESERVED_HINTS = {
    "attempt": "later attempts are named <task>.2, <task>.3; use '-' or '_' before the number",
    "fix-": "fixer agents are named fix-<task>-<n>; pick another prefix",
    "build-": "build checks are named build-<n>; pick another prefix",
    "report": "REPORT.md is the run's final report; pick another id",
}


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

_BASE = Task(id="-")


@dataclass(frozen=True, slots=True)
class _Defaults:
    """What a task gets for each field it leaves out."""

    agent: str = DEFAULT_AGENT
    model: str = _BASE.model
    timeout: float = _BASE.timeout
    stall_timeout: float = _BASE.stall_timeout
    max_turns: int = _BASE.max_turns
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Draft:
    """A task and where it was written, kept until the graph checks are done."""

    task: Task
    node: Map
    deps: list[tuple[str, Node]] | None
    """The ``depends_on`` entries as written; None when the task left it out."""


def _plan(errs: Errors, root: Node, source: Path, override: Path | None) -> Plan | None:
    if not isinstance(root, Map):
        errs.add(root, "wrong-type", f"a plan must be a mapping (tasks: ...), not {kind(root)}")
        return None
    extensions = tuple(key for key in root.items if key.startswith("x-"))  # a home for anchors
    top = Fields(errs, root, _TOP_KEYS + extensions, "plan")
    name = top.text("name")
    if name is not None and (not name.strip() or len(name) > 200 or not name.isprintable()):
        message = f"plan name {show(name)} is not usable"
        errs.add(top.node.items["name"], "bad-name", message, "use up to 200 printable characters")
    defaults = _defaults(errs, mapping_of(errs, top.get("defaults"), "defaults"))
    limits = _limits(errs, mapping_of(errs, top.get("limits"), "limits"))
    prices = _prices(errs, mapping_of(errs, top.get("prices"), "prices"))
    fixer_node = mapping_of(errs, top.get("fixer"), "fixer")
    fixer = FixerSpec()
    if fixer_node is not None:
        fixer = _fixer(Fields(errs, fixer_node, _FIXER_KEYS, "fixer", _MEANT))
    drafts, batches = _tasks_or_batches(errs, top, defaults)
    _check_graph(errs, drafts)
    names = {d.task.id for d in drafts} | {batch for batch, _ in batches}
    build = _build(errs, mapping_of(errs, top.get("build"), "build"), names)
    workspace = _workspace(top.text("workspace"), source, override)
    return Plan(
        name=name if name is not None else source.stem,
        tasks=tuple(d.task for d in drafts),
        workspace=workspace,
        source=Path(os.path.abspath(source)),
        limits=limits,
        build=build,
        fixer=fixer,
        batches=batches,
        prices=prices,
        form="batches" if top.get("batches") is not None and top.get("tasks") is None else "tasks",
    )


def _workspace(written: str | None, source: Path, override: Path | None) -> Path:
    """The command line beats the file, the file is relative to itself, else the current dir."""
    if override is not None:
        return Path(os.path.abspath(os.path.expanduser(override)))
    if written is not None:
        base = os.path.dirname(os.path.abspath(source))
        return Path(os.path.abspath(os.path.join(base, os.path.expanduser(written))))
    return Path(os.path.abspath(os.curdir))


def _defaults(errs: Errors, node: Map | None) -> _Defaults:
    if node is None:
        return _Defaults()
    f = Fields(errs, node, _DEFAULT_KEYS, "defaults")
    base = _Defaults()
    model, timeout, stall = f.text("model"), f.duration("timeout"), f.duration("stall_timeout")
    turns, env, pass_env = f.count("max_turns", least=1), _env(f), _pass_env(f)
    return _Defaults(
        agent=_agent(f, base.agent),
        model=model if model is not None else base.model,
        timeout=timeout if timeout is not None else base.timeout,
        stall_timeout=stall if stall is not None else base.stall_timeout,
        max_turns=turns if turns is not None else base.max_turns,
        env=env if env is not None else base.env,
        pass_env=pass_env if pass_env is not None else base.pass_env,
    )


def _limits(errs: Errors, node: Map | None) -> Limits:
    base = Limits()
    if node is None:
        return base
    f = Fields(errs, node, _LIMIT_KEYS, "limits")
    rule = "bad-limit"
    concurrency = f.count("max_concurrency", least=1, rule=rule)
    agents = f.count("max_agents", least=1, rule=rule)
    depth = f.count("max_depth", least=0, rule=rule)
    budget = f.number("budget_usd", least=0, above=True, rule=rule)
    rate = f.number("spawn_rate", least=0, above=True, rule=rule)
    grace = f.duration("grace", zero_ok=True, rule=rule)
    return Limits(
        max_concurrency=concurrency if concurrency is not None else base.max_concurrency,
        max_agents=agents if agents is not None else base.max_agents,
        max_depth=depth if depth is not None else base.max_depth,
        budget_usd=budget if budget is not None else base.budget_usd,
        spawn_rate=rate if rate is not None else base.spawn_rate,
        grace=grace if grace is not None else base.grace,
    )


def _prices(errs: Errors, node: Map | None) -> tuple[tuple[str, Price], ...]:
    out: list[tuple[str, Price]] = []
    for model, value in (node.items if node else {}).items():
        owner = f"prices: {show(model)}"
        entry = mapping_of(errs, value, owner)
        if entry is None:
            continue
        f = Fields(errs, entry, ("input", "output"), owner)
        rates = [
            f.number(key, least=0, above=False, rule="bad-price") for key in ("input", "output")
        ]
        for key in ("input", "output"):
            if key not in f:
                errs.add(entry, "missing-field", f"{owner} needs {key} (USD per Mtok)")
        if rates[0] is not None and rates[1] is not None:
            out.append((model, Price(rates[0], rates[1])))
    return tuple(out)


def _fixer(f: Fields) -> FixerSpec:
    agent = _agent(f, "")
    shell = bool(f.flag("shell"))
    prompt = f.text("prompt")
    if agent:
        _require(f, agent, prompt, fixer=True)
    return FixerSpec(
        agent=agent or None,
        model=f.text("model"),
        prompt=prompt or "",
        command=_command(f, shell) or (),
        shell=shell,
        script=_script(f, "script") or (),
        timeout=f.duration("timeout"),
        stall_timeout=f.duration("stall_timeout"),
        max_turns=f.count("max_turns", least=1),
    )


def _build(errs: Errors, node: Map | None, names: set[str]) -> Build:
    base = Build()
    if node is None:
        return base
    f = Fields(errs, node, _BUILD_KEYS, "build")
    command = f.get("command")
    commands: list[str] = []
    if command is None:
        hint = "add command: python -m pytest -q"
        errs.add(node, "missing-command", "build needs a command", hint)
    elif isinstance(command, Map):
        f.wrong("command", command, "a command line or a list of them")
    else:
        for entry in command.items if isinstance(command, Seq) else [command]:
            text = text_of(errs, entry, "build: command")
            if text is not None and not text.strip():
                errs.add(entry, "bad-command", "build: command is empty")
            elif text is not None:
                commands.append(text)
        if isinstance(command, Seq) and not command.items:
            errs.add(command, "bad-command", "build: command is an empty list")
    timeout = f.duration("timeout")
    cycles = f.count("max_fix_cycles", least=0)
    after = f.names("after", "task ids or batch names") or []
    for number, (name, at) in enumerate(after):
        if name not in names:
            message = f"build: after names {show(name)}, which is no task or batch"
            errs.add(at, "unknown-after", message, closest(name, names) if number < 20 else "")
    return Build(
        commands=tuple(commands),
        timeout=timeout if timeout is not None else base.timeout,
        max_fix_cycles=cycles if cycles is not None else base.max_fix_cycles,
        after=tuple(dict.fromkeys(name for name, _ in after)),
    )


# --- tasks ----------------------------------------------------------------------------------


def _tasks_or_batches(
    errs: Errors, top: Fields, defaults: _Defaults
) -> tuple[list[_Draft], tuple[tuple[str, tuple[str, ...]], ...]]:
    tasks, batches = top.get("tasks"), top.get("batches")
    keys = top.node.keys
    if tasks is not None and batches is not None:
        message = "a plan has tasks: or batches:, not both"
        hint = "put every task in a batch, or drop batches:"
        errs.add(keys["batches"], "tasks-and-batches", message, hint)
    listed = tasks if tasks is not None else batches
    key = "tasks" if tasks is not None else "batches"
    if listed is None:
        at = keys.get("tasks") or keys.get("batches") or (top.node.line, top.node.col)
        errs.add(at, "empty-plan", "the plan has no tasks", "add tasks: (a list) or batches:")
        return [], ()
    if not isinstance(listed, Seq):
        hint = f"in TOML write [[{key}]] before each entry" if isinstance(listed, Map) else ""
        top.wrong(key, listed, "a list", hint)
        return [], ()
    if not listed.items:
        errs.add(keys[key], "empty-plan", f"{key} is an empty list", "add at least one task")
        return [], ()
    if tasks is not None:
        found = (_task(errs, item, defaults, None, None) for item in listed.items)
        return [d for d in found if d is not None], ()
    return _batches(errs, listed, defaults)


def _batches(
    errs: Errors, listed: Seq, defaults: _Defaults
) -> tuple[list[_Draft], tuple[tuple[str, tuple[str, ...]], ...]]:
    """Batch N's tasks depend on all of batch N-1's unless they say otherwise."""
    drafts: list[_Draft] = []
    out: list[tuple[str, tuple[str, ...]]] = []
    first_line: dict[str, int] = {}
    previous: tuple[str, ...] = ()
    for number, node in enumerate(listed.items, 1):
        if not isinstance(node, Map):
            message = f"a batch must be a mapping (name:, tasks:), not {kind(node)}"
            errs.add(node, "wrong-type", message)
            continue
        f = Fields(errs, node, ("name", "tasks"), f"batch {number}")
        name = f.text("name")
        if name is None:
            if f.get("name") is None:
                errs.add(node, "missing-field", f"batch {number} needs a name")
            name = f"batch-{number}"
        elif not ID_PATTERN.fullmatch(name):
            message = f"batch name {show(name)} is not allowed"
            errs.add(node.items["name"], "invalid-name", message, _ID_HINT)
        elif name in first_line:
            message = f"batch name {show(name)} is used twice"
            hint = f"the first is on line {first_line[name]}"
            errs.add(node.items["name"], "duplicate-batch", message, hint)
        first_line.setdefault(name, node.line)
        tasks = f.get("tasks")
        if not isinstance(tasks, Seq) or not tasks.items:
            if tasks is None or isinstance(tasks, Seq):
                message = f"batch {show(name)} has no tasks"
                errs.add(node, "empty-batch", message, "add tasks: [...]")
            else:
                f.wrong("tasks", tasks, "a list of tasks")
            continue
        found = [_task(errs, item, defaults, name, previous) for item in tasks.items]
        ids = tuple(d.task.id for d in found if d is not None)
        drafts.extend(d for d in found if d is not None)
        out.append((name, ids))
        previous = ids
    return drafts, tuple(out)


def _task(
    errs: Errors, node: Node, d: _Defaults, batch: str | None, implicit: tuple[str, ...] | None
) -> _Draft | None:
    if not isinstance(node, Map):
        errs.add(node, "wrong-type", f"a task must be a mapping with an id, not {kind(node)}")
        return None
    written = node.items.get("id")
    shown = written.text if isinstance(written, Scalar) and written.value is not None else ""
    f = Fields(errs, node, _TASK_KEYS, f"task {show(shown)}" if shown else "task", _MEANT)
    task_id = f.text("id")
    if task_id is None and f.get("id") is None:
        errs.add(node, "missing-id", "a task needs an id", "add id: <name>")
    elif task_id is not None and written is not None:
        _check_id(errs, task_id, written)
    agent = _agent(f, d.agent)
    shell = bool(f.flag("shell"))
    prompt = f.text("prompt")
    command, script, retry = _command(f, shell), _script(f, "script"), _script(f, "retry_script")
    deps = f.names("depends_on", "task ids")
    model, timeout, stall = f.text("model"), f.duration("timeout"), f.duration("stall_timeout")
    turns, env, pass_env = f.count("max_turns", least=1), _env(f), _pass_env(f)
    if agent:
        _require(f, agent, prompt)
    retry_node = f.get("retry_script")
    if isinstance(retry_node, Seq) and not retry_node.items:
        errs.add(retry_node, "missing-script", f"{f.owner}: retry_script is empty")
    if task_id is None:
        return None
    task = Task(
        id=task_id,
        agent=agent,
        prompt=prompt or "",
        depends_on=tuple(dict.fromkeys(t for t, _ in deps)) if deps is not None else implicit or (),
        command=command or (),
        shell=shell,
        script=script or (),
        retry_script=retry,
        model=model if model is not None else d.model,
        timeout=timeout if timeout is not None else d.timeout,
        stall_timeout=stall if stall is not None else d.stall_timeout,
        max_turns=turns if turns is not None else d.max_turns,
        env=env if env is not None else d.env,
        pass_env=pass_env if pass_env is not None else d.pass_env,
        batch=batch,
        line=node.line,
    )
    return _Draft(task, node, deps)


def _check_id(errs: Errors, task_id: str, node: Node) -> None:
    if not ID_PATTERN.fullmatch(task_id):
        errs.add(node, "invalid-id", f"task id {show(task_id)} is not allowed", _ID_HINT)
        return
    reserved = _reserved(task_id)
    if reserved:
        message = f"task id {show(task_id)} could be mistaken for a derived agent's id"
        errs.add(node, "reserved-id", message, _RESERVED_HINTS[reserved])


def _reserved(task_id: str) -> str | None:
    """Which derived agent id (or file name) ``task_id`` could collide with, case blind."""
    low = task_id.lower()
    if _ATTEMPT_SUFFIX.fullmatch(task_id):
        return "attempt"
    if low.startswith(("fix-", "build-")):
        return low[: low.index("-") + 1]
    return "report" if low == "report" else None


def _agent(f: Fields, default: str) -> str:
    """The agent kind named in ``f`` (else ``default``); "" after an error."""
    node = f.get("agent")
    if node is None:
        return default
    name = f.text("agent")
    if name is None:
        return ""
    if name not in AGENT_KINDS and name not in PRESETS:
        hint = closest(name, _KINDS) or "agents: " + ", ".join(_KINDS)
        f.errs.add(node, "unknown-agent", f"{f.owner}: unknown agent {show(name)}", hint)
        return ""
    return name


def _require(f: Fields, agent: str, prompt: str | None, *, fixer: bool = False) -> None:
    """A claude or preset agent needs a prompt, a command agent a command, scripted a script."""
    script = f.get("script")
    if agent == "command" and f.get("command") is None:
        rule, needed = "missing-command", "command"
    elif agent == "scripted" and (script is None or (isinstance(script, Seq) and not script.items)):
        rule, needed = "missing-script", "script"
    elif agent not in ("command", "scripted") and not fixer:
        if f.get("prompt") is not None and (prompt is None or prompt.strip()):
            return
        rule, needed = "missing-prompt", "prompt"
    else:
        return
    hint = f"add {needed}:"
    if needed != "script" and script is not None:
        hint = "it has a script: set agent: scripted"
    elif needed != "command" and f.get("command") is not None:
        hint = "it has a command: set agent: command"
    if "agent" not in f:
        hint += f" (it names no agent, so it gets {agent!r})"
    f.errs.add(f.node, rule, f"{f.owner}: a {agent} agent needs a {needed}", hint)


def _command(f: Fields, shell: bool) -> tuple[str, ...] | None:
    """argv from a list, or from a string split like a shell would (kept whole with shell: true)."""
    node = f.get("command")
    if node is None:
        return None
    what = f"{f.owner}: command"
    if isinstance(node, Map):
        f.wrong("command", node, "a list of arguments or a command line")
        return None
    if isinstance(node, Seq):
        parts = [text_of(f.errs, item, f"{what} entry") for item in node.items]
        argv = tuple(p for p in parts if p is not None)
        if len(argv) != len(parts):
            return None
        if shell and len(argv) > 1:
            hint = "with shell: true, write the command as one string"
            f.errs.add(node, "bad-command", f"{what} is a list but shell is true", hint)
            return None
    else:
        text = text_of(f.errs, node, what)
        if text is None:
            return None
        try:
            argv = (text,) if shell else tuple(shlex.split(text))
        except ValueError as exc:  # "No closing quotation"
            message = f"{what}: cannot split {show(text)}: {exc}"
            f.errs.add(node, "bad-command", message, "fix the quoting, or set shell: true")
            return None
    if not argv or not argv[0].strip():
        f.errs.add(node, "bad-command", f"{what} is empty")
        return None
    return argv


def _env(f: Fields) -> tuple[tuple[str, str], ...] | None:
    node = f.get("env")
    if node is None:
        return None
    if not isinstance(node, Map):
        f.wrong("env", node, "a mapping of NAME: value")
        return None
    out: list[tuple[str, str]] = []
    for name, value in node.items.items():
        if not _ENV_NAME.fullmatch(name):
            message = f"{f.owner}: env name {show(name)} is not allowed"
            f.errs.add(node.keys[name], "bad-env", message, _ENV_HINT)
        text = text_of(f.errs, value, f"{f.owner}: env {show(name)}")
        if text is not None:
            out.append((name, text))
    return tuple(out)


def _pass_env(f: Fields) -> tuple[str, ...] | None:
    names = f.names("pass_env", "environment variable names")
    if names is None:
        return None
    for name, node in names:
        if not _ENV_NAME.fullmatch(name):
            message = f"{f.owner}: pass_env name {show(name)} is not allowed"
            f.errs.add(node, "bad-env", message, _ENV_HINT)
    return tuple(dict.fromkeys(name for name, _ in names))


# --- scripted steps -------------------------------------------------------------------------


def _script(f: Fields, key: str) -> tuple[Step, ...] | None:
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


# --- the graph ------------------------------------------------------------------------------


def _check_graph(errs: Errors, drafts: list[_Draft]) -> None:
    """Duplicate ids, dependencies on nothing, and cycles (found in linear time)."""
    first: dict[str, _Draft] = {}
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
