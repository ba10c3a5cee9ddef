"""A plan's ``tasks:`` (or ``batches:``) read into tasks, each kept with where it was written.

Each task gets what it leaves out from `Defaults`; a task in batch N without ``depends_on``
depends on every task of batch N-1. Ids are checked one by one here; duplicates, unknown
dependencies and cycles need the whole list and are checked by `planfile`.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.ids import RESERVED_HINTS, TASK_ID, TASK_ID_HINT, reserved
from orchestrator.plan.fields import Errors, Fields
from orchestrator.plan.model import Task
from orchestrator.plan.nodes import Map, Node, Scalar, Seq, kind, show
from orchestrator.plan.steps import script_of
from orchestrator.plan.taskfields import (
    MEANT,
    TASK_DEFAULT_KEYS,
    Defaults,
    agent_of,
    allowed_tools_of,
    args_of,
    budget_of,
    check_agent_keys,
    command_of,
    env_of,
    pass_env_of,
    permission_mode_of,
    require,
    secrets_of,
)

Batches = tuple[tuple[str, tuple[str, ...]], ...]
"""(batch name, task ids) in order, as `orchestrator.plan.model.Plan.batches` holds them."""

TASK_KEYS: tuple[str, ...] = (
    "id", "agent", "prompt", "depends_on", "command", "script", "retry_script", "secrets",
    *TASK_DEFAULT_KEYS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Draft:
    """A task and where it was written, kept until the graph checks are done."""

    task: Task
    node: Map
    deps: list[tuple[str, Node]] | None
    """The ``depends_on`` entries as written; None when the task left it out."""


def tasks_of(errs: Errors, top: Fields, defaults: Defaults) -> tuple[list[Draft], Batches]:
    """The tasks of the plan mapping ``top``, from ``tasks:`` or from ``batches:``."""
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


def _batches(errs: Errors, listed: Seq, defaults: Defaults) -> tuple[list[Draft], Batches]:
    """Batch N's tasks depend on all of batch N-1's unless they say otherwise."""
    drafts: list[Draft] = []
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
        elif not TASK_ID.fullmatch(name):
            message = f"batch name {show(name)} is not allowed"
            errs.add(node.items["name"], "invalid-name", message, TASK_ID_HINT)
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
    errs: Errors, node: Node, d: Defaults, batch: str | None, implicit: tuple[str, ...] | None
) -> Draft | None:
    if not isinstance(node, Map):
        errs.add(node, "wrong-type", f"a task must be a mapping with an id, not {kind(node)}")
        return None
    written = node.items.get("id")
    shown = written.text if isinstance(written, Scalar) and written.value is not None else ""
    f = Fields(errs, node, TASK_KEYS, f"task {show(shown)}" if shown else "task", MEANT)
    task_id = f.text("id")
    if task_id is None and f.get("id") is None:
        errs.add(node, "missing-id", "a task needs an id", "add id: <name>")
    elif task_id is not None and written is not None:
        _check_id(errs, task_id, written)
    agent = agent_of(f, d.agent)
    prompt = f.text("prompt")
    how, script = command_of(f), script_of(f, "script")
    command, shell = how if how is not None else (d.command, d.shell)
    retry = script_of(f, "retry_script")
    deps = f.names("depends_on", "task ids")
    model, timeout, stall = f.text("model"), f.duration("timeout"), f.duration("stall_timeout")
    turns, env, pass_env = f.count("max_turns", least=1), env_of(f), pass_env_of(f)
    mode, tools, args = permission_mode_of(f), allowed_tools_of(f), args_of(f)
    budget = budget_of(f)
    secrets = secrets_of(f, agent)
    if agent:
        require(f, agent, prompt, command=bool(d.command))
        check_agent_keys(f, agent)
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
        command=command,
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
        permission_mode=mode if mode is not None else d.permission_mode,
        allowed_tools=tools if tools is not None else d.allowed_tools,
        args=args if args is not None else d.args,
        budget_usd=budget if budget is not None else d.budget_usd,
        secrets=secrets,
    )
    return Draft(task, node, deps)


def _check_id(errs: Errors, task_id: str, node: Node) -> None:
    if not TASK_ID.fullmatch(task_id):
        errs.add(node, "invalid-id", f"task id {show(task_id)} is not allowed", TASK_ID_HINT)
        return
    derived = reserved(task_id)
    if derived:
        message = f"task id {show(task_id)} would write over the run's {derived} file"
        errs.add(node, "reserved-id", message, RESERVED_HINTS[derived])
