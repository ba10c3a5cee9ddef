"""Tasks added while a run goes on: an addition request checked like a plan, into a `Task`.

An agent (its ``add_task`` tool, or ``orchestrator add`` in its process) or a person
(``orchestrator add`` from another terminal) asks for a task: an id, a prompt, a kind and
dependencies on tasks the run already has. This module checks what the plan loader checks
for a written task (the id's grammar and reserved names, duplicates, unknown dependencies,
cycles, what the kind needs) and answers with the task or a `Refusal`: data the asker
reads, never an exception. The run's limits are checked by the engine (`orchestrator.engine.
growth`), which knows what has started. Pure: no files, no loop.

Decision: an added task takes every setting it does not name (command, script, model,
timeouts, env ...) from a template (`template_for`): the adding agent's own task when the
kind is the same (a command agent that adds a task of its kind gets its own command
template, ``{prompt}`` filled with the new prompt), else the run's first task of that kind,
else what the plan's ``defaults:`` give a task. Without a kind, an agent adds its own kind
and a person the ``defaults:`` kind (or, when no task has that, the first task's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestrator.ids import RESERVED_HINTS, TASK_ID, TASK_ID_HINT, reserved
from orchestrator.plan.model import AGENT_KINDS, PRESETS, Task

MAX_PROMPT = 32 * 1024
"""Characters an added task's prompt may have (a request is at most 64 KiB in all)."""
MAX_DEPENDENCIES = 256
FIELDS = frozenset({"id", "prompt", "kind", "depends_on"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an addition was refused: ``rule`` names it (the loader's slugs, or a limit)."""

    rule: str
    message: str
    hint: str = ""

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message, "hint": self.hint}

    def line(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.message} [{self.rule}]{hint}"


@dataclass
class Known:
    """The run's tasks as additions are checked against them: ids case-folded and the first
    task of each kind, kept up to date as the run grows (so each check is O(1) in its size)."""

    folded: dict[str, str] = field(default_factory=dict)
    firsts: dict[str, Task] = field(default_factory=dict)

    @classmethod
    def of(cls, tasks: Iterable[Task]) -> Known:
        known = cls()
        for task in tasks:
            known.add(task)
        return known

    def add(self, task: Task) -> None:
        folded = task.id.lower()  # a new string even when it equals the id: keep the id's
        self.folded.setdefault(task.id if folded == task.id else folded, task.id)
        self.firsts.setdefault(task.agent, task)

    def has(self, task_id: str) -> bool:
        return self.folded.get(task_id.lower()) == task_id


def task_of_request(
    request: Mapping[str, object],
    *,
    known: Known,
    template: Task,
) -> Task | Refusal:
    """The task ``request`` asks for, checked against the run's ``known`` tasks; or why not.

    ``template`` gives what the request does not name (see the module's decision)."""
    extra = sorted(set(request) - FIELDS)
    if extra:
        return Refusal("unknown-field", f"unknown field(s): {', '.join(extra)[:200]}",
                       "an added task has id, prompt, kind and depends_on")  # fmt: skip
    tid, prompt, kind = request.get("id"), request.get("prompt", ""), request.get("kind")
    deps = request.get("depends_on", [])
    if not isinstance(tid, str) or not TASK_ID.fullmatch(tid):
        return Refusal("bad-id", f"task id {str(tid)[:80]!r} is not usable", TASK_ID_HINT)
    why = reserved(tid)
    if why is not None:
        return Refusal("reserved-id", f"task id {tid!r} is reserved", RESERVED_HINTS[why])
    if tid.lower() in known.folded:
        return Refusal("duplicate-id", f"the run already has a task {known.folded[tid.lower()]!r}",
                       "pick another id (your agent id plus a suffix is unique)")  # fmt: skip
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
        return Refusal("bad-prompt", f"the prompt is not text of at most {MAX_PROMPT} chars")
    kind = template.agent if kind is None else kind
    if not isinstance(kind, str) or (kind not in AGENT_KINDS and kind not in PRESETS):
        kinds = ", ".join(sorted(AGENT_KINDS | PRESETS))
        return Refusal("unknown-agent", f"agent kind {str(kind)[:40]!r} is unknown", kinds)
    checked = _dependencies(tid, deps, known)
    if isinstance(checked, Refusal):
        return checked
    task = replace(template, id=tid, agent=kind, prompt=prompt, depends_on=checked, line=0,
                   batch=None, retry_script=None)  # fmt: skip
    return _needs(task)


def template_for(kind: object, own: Task | None, known: Known, defaults: Task) -> Task:
    """Where an addition's unnamed settings come from (see the module's decision)."""
    if own is not None and (kind is None or kind == own.agent):
        return own
    if kind is None:
        first = next(iter(known.firsts.values()), None)
        kind = defaults.agent if defaults.agent in known.firsts or first is None else first.agent
    return known.firsts.get(str(kind)) or replace(defaults, agent=str(kind))


def _dependencies(tid: str, deps: object, known: Known) -> tuple[str, ...] | Refusal:
    if not isinstance(deps, Sequence) or isinstance(deps, str):
        return Refusal("wrong-type", "depends_on is a list of task ids")
    if len(deps) > MAX_DEPENDENCIES:
        return Refusal("too-many", f"more than {MAX_DEPENDENCIES} dependencies")
    out: list[str] = []
    for dep in deps:
        if not isinstance(dep, str):
            return Refusal("wrong-type", "depends_on is a list of task ids")
        if dep == tid:
            return Refusal("cycle", f"task {tid!r} cannot depend on itself",
                           "a task added now can depend only on tasks the run has")  # fmt: skip
        if not known.has(dep):
            return Refusal("unknown-dependency", f"{tid!r} depends on {dep[:80]!r}, which is "
                           "not a task of this run", "add that task first")  # fmt: skip
        if dep not in out:
            out.append(dep)
    # Nothing in the run depends on a task that does not exist yet: no cycle can close here.
    return tuple(out)


def _needs(task: Task) -> Task | Refusal:
    """What the kind needs, as the loader's `require` asks of a written task."""
    if task.agent == "command" and not task.command:
        return Refusal(
            "missing-command",
            "a command task needs a command, and the template gives none",
            "add it from a command agent, or pick kind claude",
        )
    if task.agent == "scripted" and not task.script:
        return Refusal(
            "missing-script",
            "a scripted task needs a script, and the template gives none",
            "add it from a scripted agent, or pick another kind",
        )
    if task.agent not in ("command", "scripted") and not task.prompt.strip():
        return Refusal("missing-prompt", f"a {task.agent} task needs a prompt")
    return task
