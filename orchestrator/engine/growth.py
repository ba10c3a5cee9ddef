"""Tasks added while a run goes on: who asks, every check, and the answer the asker reads.

An addition comes from an agent (its ``add_task`` tool, or ``orchestrator add`` run inside
its process tree) or from a person (``orchestrator add`` in another terminal). The request is
checked like a plan (`orchestrator.plan.additions`), then against the run's limits by the
governor (`Governor.addition_denial`: fence, max_agents with the tasks not yet started
counted, depth = the adder's + 1, budget, spawn rate); only then does the scheduler take the
task in (`Run.grow`). Every refusal is an answer (``{"ok": false, "refused": {...}}``) and a
line in the adder's progress file, never an exception: an agent that asks too much is told
so and goes on.

Who asks is not taken from the request: `adder_of` finds it from the connecting process
(the control socket's peer credentials), walking its parents up to an agent process this
run started. A descendant of this orchestrator that belongs to no running agent is refused;
a process that is not a descendant is a person, and its task runs at the run's base depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.engine.state import TaskRecord
from orchestrator.plan.additions import Known, Refusal, task_of_request, template_for
from orchestrator.process.procfs import process_start_time, stat_fields

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run

MAX_ANCESTRY = 64
"""Parents walked from a connecting process before it counts as no agent's."""


class Additions:
    """What the run's additions are checked against, kept by the scheduler as it grows."""

    def __init__(self, tasks: Iterable[TaskRecord], fixer_kind: str | None) -> None:
        records = list(tasks)
        self.known = Known.of(t.task for t in records)
        self.added = max((t.added for t in records), default=0)
        """Tasks added so far (a resumed run goes on counting)."""
        self.fixer_kind = fixer_kind or "scripted"

    def took(self, trec: TaskRecord) -> None:
        self.known.add(trec.task)
        self.added = max(self.added, trec.added)


class NotAnAgent:
    """A process of this run's tree that belongs to no running agent (it left its agent)."""


def adder_of(run: Run, pid: int | None, *, own_pid: int) -> str | NotAnAgent | None:
    """The running agent whose process tree ``pid`` is in; None for a process outside this
    orchestrator's tree (a person's terminal); `NotAnAgent` for a stray descendant."""
    if pid is None:
        return None
    leaders = {rec.pid: rec for rec in run.agents.values() if rec.state == "running" and rec.pid}
    for _ in range(MAX_ANCESTRY):
        leader = leaders.get(pid)
        if leader is not None and process_start_time(pid) == leader.pstart:
            return leader.id  # the process it started, not another that got its pid since
        if pid == own_pid:
            return NotAnAgent()
        fields = stat_fields(pid)
        if len(fields) < 2:
            return None  # gone: it cannot be an agent's
        pid = int(fields[1])
        if pid <= 1:
            return None
    return None


def answer(run: Run, request: Mapping[str, object], *, adder: str | None) -> dict[str, Any]:
    """Check and add the task ``request`` asks for; the JSON answer for the asker."""
    outcome = add(run, request, adder=adder)
    rec = run.agents.get(adder) if adder is not None else None
    if isinstance(outcome, Refusal):
        if rec is not None and rec.state == "running":
            run.recorder.add_refused(rec.id, outcome.line())
        return {"ok": False, "refused": outcome.as_json()}
    return {"ok": True, "added": outcome.task.id, "depth": outcome.depth, "parent": adder}


def add(run: Run, request: Mapping[str, object], *, adder: str | None) -> TaskRecord | Refusal:
    """The checks, in the loader's order then the limits'; on success the task is in the run."""
    rec = run.agents.get(adder) if adder is not None else None
    if adder is not None and (rec is None or rec.state != "running"):
        return Refusal("not-running", f"agent {adder!r} is not running in this run")
    own = run.tasks[rec.task_id].task if rec is not None and rec.task_id in run.tasks else None
    known = run.additions.known
    template = template_for(request.get("kind"), own, known, run.plan.fixer.base)
    task = task_of_request(request, known=known, template=template)
    if isinstance(task, Refusal):
        return task
    kinds = {*known.firsts, run.additions.fixer_kind}
    if task.agent not in kinds:
        return Refusal("kind-not-in-run", f"this run has no {task.agent} agents", "add a task "
                       f"of a kind the run has: {', '.join(sorted(kinds))}")  # fmt: skip
    for dep in task.depends_on:
        trec = run.tasks[dep]
        if trec.final and trec.state != "succeeded":
            return Refusal("dependency-ended", f"dependency {dep!r} ended {trec.state}; the "
                           "task could never start")  # fmt: skip
    if not run.dispatching and not run.closing:
        return Refusal("starting", "the run is starting; nothing is added before its first "
                       "agents start", "ask again in a moment")  # fmt: skip
    if run.closing:
        return Refusal("closing", "the run's tasks are done and its final check has started; "
                       "nothing is added now", "run it with --keep-open to add tasks after "
                       "its own are done")  # fmt: skip
    depth = rec.depth + 1 if rec is not None else run.settings.base_depth
    denial = run.governor.addition_denial(depth=depth, unstarted=run.unstarted)
    if denial is not None:
        return Refusal(denial.limit, denial.reason, _LIMIT_HINTS.get(denial.limit, ""))
    new = TaskRecord(task, depth=depth, added=run.additions.added + 1, added_by=adder)
    run.additions.took(new)
    run.grow(new)
    return new


_LIMIT_HINTS = {
    "max_agents": "finish the work in this agent, or ask a person to raise limits.max_agents",
    "max_depth": "an added task runs one deeper than its adder; do the work here instead",
    "budget_usd": "the run's money is spent",
    "spawn_rate": "wait a moment and ask again",
    "fence": "the run is stopping",
}
