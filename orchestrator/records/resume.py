"""`run --resume`: what the journal says was done, what vanished, and how the plan changed.

`plan_resume` is pure: journal state plus plan in, decisions out. `settle_lost` is the one
side effect: agents the journal says were running, whose process is gone, are marked ``lost``
in their progress file and the journal, never silently done.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.ids import collisions
from orchestrator.plan.additions import Known, Refusal, task_of_request, template_for
from orchestrator.plan.model import Plan, Task
from orchestrator.records.journal import Journal, JournalState
from orchestrator.records.progress import open_regular, safe_path
from orchestrator.records.render import status_line_of
from orchestrator.records.rundir import write_all


def fingerprint(task: Task) -> str:
    """What makes a task the same task across plan edits (its source line does not count)."""
    body = repr((task.agent, task.prompt, task.depends_on, task.command, task.shell, task.script,
                 task.retry_script, task.model, task.env, task.pass_env))  # fmt: skip
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ResumePlan:
    done: tuple[str, ...]
    """Tasks that succeeded before and are unchanged: never run again."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Attempts each task already had, so new ones are numbered after them."""
    lost: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    grown: tuple[Added, ...] = ()
    """Tasks added while the run went on (`added_tasks`), taken in again."""
    grown_notes: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        out = list(self.grown_notes)
        if self.grown:
            ids = ", ".join(a.task.id for a in self.grown)
            out.append(f"resume: {len(self.grown)} task(s) added during the run kept: {ids}")
        if self.done:
            out.append(f"resume: {len(self.done)} succeeded task(s) kept: {', '.join(self.done)}")
        if self.lost:
            out.append(f"resume: marked lost (their process was gone): {', '.join(self.lost)}")
        if self.changed:
            out.append(f"resume: changed in the plan, run again: {', '.join(self.changed)}")
        if self.removed:
            out.append(f"resume: no longer in the plan: {', '.join(self.removed)}")
        if self.added:
            out.append(f"resume: new in the plan: {', '.join(self.added)}")
        return out


def plan_resume(old: JournalState, plan: Plan) -> ResumePlan:
    """What a resumed run keeps, runs again and marks lost. `UsageError` (exit 2, nothing
    changed) when a task id of the plan names another agent of the journal (a run recorded
    before task ids and derived ids were kept apart: ``build-1`` was a build check)."""
    taken = collisions((t.id for t in plan.tasks), old.agents)
    if taken:
        raise UsageError(
            f"error: cannot resume: the journal already has agents named {', '.join(taken)} "
            "that are not those tasks (a run recorded with the earlier agent names) "
            "(hint: run without --resume: the earlier run's files are kept under .runs/)"
        )
    prints: dict[str, str] = old.run.get("fingerprints") or {}
    current = {t.id: t for t in plan.tasks}
    changed = tuple(t for t in current if t in prints and prints[t] != fingerprint(current[t]))
    done = tuple(
        tid
        for tid, rec in old.tasks.items()
        if rec.get("state") == "succeeded" and tid in current and tid not in changed
    )
    attempts: dict[str, int] = {}
    for rec in old.agents.values():
        if rec.get("role", "task") == "task" and isinstance(rec.get("task"), str):
            tid = rec["task"]
            attempts[tid] = max(attempts.get(tid, 0), int(rec.get("attempt") or 1))
    lost = tuple(aid for aid, rec in old.agents.items() if rec.get("state") in ("running", None))
    return ResumePlan(
        done=done,
        attempts=attempts,
        lost=lost,
        changed=changed,
        removed=tuple(t for t in prints if t not in current),
        added=tuple(t for t in current if prints and t not in prints),
    )


@dataclass(frozen=True)
class Added:
    """A task added while the journaled run went on, as `--resume` takes it in again."""

    task: Task
    added: int
    depth: int | None
    added_by: str | None


def added_tasks(old: JournalState, plan: Plan) -> tuple[Plan, list[Added], list[str]]:
    """The plan with the tasks added during the journaled run, rebuilt in the order they were
    added from what was asked (so each gets the same template: its adder's task or the
    defaults), checked again; and a note for each that no longer fits the plan."""
    journaled = sorted(
        (rec["added"], tid, rec) for tid, rec in old.tasks.items()
        if isinstance(rec.get("added"), int) and rec["added"] > 0
        and isinstance(rec.get("request"), dict)
    )  # fmt: skip
    tasks = {t.id: t for t in plan.tasks}
    known = Known.of(plan.tasks)
    out: list[Added] = []
    notes: list[str] = []
    for n, tid, rec in journaled:
        adder = rec.get("added_by") if isinstance(rec.get("added_by"), str) else None
        own_id = old.agents.get(adder, {}).get("task") if adder else None
        own = tasks.get(own_id) if isinstance(own_id, str) else None
        request = rec["request"]
        template = template_for(request.get("kind"), own, known, plan.fixer.base)
        task = task_of_request(request, known=known, template=template)
        if isinstance(task, Refusal):
            notes.append(f"resume: added task {tid} is left out: {task.line()}")
            continue
        tasks[task.id] = task
        known.add(task)
        depth = rec.get("depth")
        out.append(Added(task, n, depth if isinstance(depth, int) else None, adder))
    grown = replace(plan, tasks=(*plan.tasks, *(a.task for a in out)))
    return grown, out, notes


def settle_lost(responses: Path, journal: Journal, lost: tuple[str, ...]) -> None:
    """End each lost agent's progress file with ``status: lost`` and journal it."""
    for agent_id in lost:
        end_file(responses, agent_id, "lost - its process was gone when the run resumed")
        journal.record("agent", id=agent_id, state="lost", reason="process gone at resume")


def reopen(journal: Journal, resumed: ResumePlan, plan: Plan) -> None:
    """Journal that the run goes on: what the last invocation recorded about its end no longer
    holds (its end time, exit code, fence), and every task that runs again is pending again,
    so no reader takes an earlier attempt's end for the task's."""
    journal.record("run", ended=None, exit_code=None, fence=None, survivors=None)
    for task in plan.tasks:
        if task.id not in resumed.done:
            journal.record("task", id=task.id, state="pending", reason="")


DEFAULT_RESPONSES = "agent-responses"


def resume_command(run: Mapping[str, Any], responses: Path, *, cwd: Path | None = None) -> str:
    """The command that continues the run the journal's ``run`` record describes, as a person
    types it in ``cwd``: the plan file, ``--resume``, and ``--responses`` / ``--workspace``
    when they are not what the command would pick by itself, and ``--cluster`` when it ran
    on one."""
    here = Path.cwd() if cwd is None else cwd
    plan = run.get("plan_file")
    args = ["orchestrator", "run", _shown(Path(plan), here) if isinstance(plan, str) else "PLAN"]
    args.append("--resume")
    if os.path.abspath(here / responses) != os.path.abspath(here / DEFAULT_RESPONSES):
        args += ["--responses", _shown(responses, here)]
    override = run.get("workspace_override")
    if isinstance(override, str) and override:
        args += ["--workspace", _shown(Path(override), here)]
    cluster = run.get("cluster")
    if isinstance(cluster, str) and cluster:
        args += ["--cluster", cluster]
    return shlex.join(args)


def tail_command(responses: Path, *, cwd: Path | None = None) -> str:
    """``orchestrator tail`` for this responses directory (an agent id goes after it)."""
    here = Path.cwd() if cwd is None else cwd
    if os.path.abspath(here / responses) == os.path.abspath(here / DEFAULT_RESPONSES):
        return "orchestrator tail"
    return shlex.join(["orchestrator", "tail", "--responses", _shown(responses, here)])


def _shown(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it is inside it, else absolute."""
    full = Path(os.path.abspath(cwd / path))
    try:
        return str(full.relative_to(os.path.abspath(cwd)))
    except ValueError:
        return str(full)


def end_file(responses: Path, agent_id: str, text: str) -> bool:
    """End the progress file of an agent no writer has open (lost with its orchestrator);
    False when there is no such file (never created, removed, a link or not a file)."""
    try:
        fd = open_regular(safe_path(responses, f"{agent_id}.md"), os.O_RDWR | os.O_APPEND)
    except (ValueError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO, errno.EISDIR):
            return False
        raise
    try:
        if _ends_with_status(fd):
            return True  # it ended just before its orchestrator died: one status line only
        write_all(fd, status_line_of(text).encode("utf-8", "replace"))
    except OSError as exc:
        exc.filename = exc.filename or f"{responses / agent_id}.md"
        raise
    finally:
        os.close(fd)
    return True


def _ends_with_status(fd: int) -> bool:
    """Whether the file's last line is already a status line (read from its end only)."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, 4096, max(size - 4096, 0)) if size else b""
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return last.startswith(b"status: ")
