"""The agents that recovery decisions make: fixers, retries and build checks, as `Spawn`s.

Pure functions from the plan and a decision; the repairs executor queues what they make.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from orchestrator import ids
from orchestrator.engine import recovery
from orchestrator.engine.blockers import fixer_prompt
from orchestrator.engine.state import AgentRecord, Spawn, TaskRecord
from orchestrator.plan.model import AGENT_KINDS, PRESETS, Build, FixerSpec, Plan, Task


def links(actions: tuple[recovery.Action, ...] | None) -> list[str]:
    """Lines for the ended agent's progress file that point at what happens next."""
    out: list[str] = []
    for action in actions or ():
        match action:
            case recovery.SpawnFixer(fixer_id=fid):
                out.append(f"fixer: {fid} takes this blocker ({fid}.md)")
            case recovery.RetryTask() as retry:
                out.append(f"retry: {retry.agent_id} ({retry.agent_id}.md)")
            case recovery.Rebuild(cycle=cycle):
                out.append(f"rebuild: fix cycle {cycle}")
            case recovery.Escalate(reason=why, next_step=step):
                out.append(f"escalated: {why}; next: {step}")
            case recovery.Wait(reason=why):
                out.append(f"waiting: {why}")
            case recovery.EndTask():
                pass
    return out


def why_no_fixer(plan: Plan, task_id: str | None) -> str:
    """Why the plan cannot make a fixer for a blocker of ``task_id`` (None: the build); "" when
    it can. Without a ``fixer:`` section a task's fixer is an agent of the task's own kind, and
    a scripted task or the build has none."""
    spec = plan.fixer
    base = plan.task(task_id) if task_id is not None else None
    kind = spec.agent or (base.agent if base is not None else "scripted")
    subject = "the build" if task_id is None else f"a {kind} task"
    if replace(spec, base=FixerSpec().base) == FixerSpec():  # no fixer: section
        if kind in ("scripted", "command", "build"):
            return f"the plan has no fixer: section, and {subject} has no fixer of its own"
        return ""
    if kind == "scripted" and not spec.script:
        return "the plan's fixer: section gives a scripted fixer no script"
    if kind == "command" and not spec.command:
        return "the plan's fixer: section gives a command fixer no command"
    if kind not in AGENT_KINDS and kind not in PRESETS:
        return f"the plan's fixer: section names agent {kind!r}, which cannot fix"
    return ""


def fixer_spawn(
    plan: Plan, action: recovery.SpawnFixer, blocked: AgentRecord, build_output: str
) -> Spawn | None:
    """The fixer the plan's ``fixer:`` section makes for this blocker; None if it makes none."""
    spec = plan.fixer
    task_id = action.blocker.task_id
    if why_no_fixer(plan, task_id):
        return None
    base = plan.task(task_id) if task_id is not None else None
    kind = spec.agent or (base.agent if base is not None else "scripted")
    prompt = fixer_prompt(
        spec.prompt,
        blocker=action.blocker,
        progress_path=f"{action.blocker.agent_id}.md",
        last_lines=list(blocked.lines),
        build_output=build_output,
        tried=action.tried,
    )
    template = base if base is not None else spec.base
    task = Task(
        id=task_id or ids.build_id(None),
        agent=kind,
        prompt=prompt,
        command=spec.command,
        shell=spec.shell,
        script=spec.script,
        model=spec.model or template.model,
        timeout=spec.timeout or template.timeout,
        stall_timeout=spec.stall_timeout or template.stall_timeout,
        max_turns=spec.max_turns or template.max_turns,
        env=spec.env if spec.env is not None else template.env,
        pass_env=spec.pass_env if spec.pass_env is not None else template.pass_env,
        permission_mode=spec.permission_mode or template.permission_mode,
        allowed_tools=spec.allowed_tools if spec.allowed_tools is not None
        else template.allowed_tools,
        args=spec.args if spec.args is not None else template.args,
        budget_usd=spec.budget_usd if spec.budget_usd is not None else template.budget_usd,
    )  # fmt: skip
    return Spawn(
        agent_id=action.fixer_id,
        task=task,
        attempt=1,
        role="fixer",
        prompt=prompt,
        script=spec.script,
        depth=action.depth,
        parent=action.blocker.agent_id,
    )


def first_spawn(trec: TaskRecord, attempt: int, depth: int, notes: tuple[str, ...]) -> Spawn:
    """The first attempt of a task in this run (``attempt`` > 1 after a resume), at the run's
    base ``depth`` (a task added at run time: at its own, its adder as parent)."""
    task = trec.task
    return Spawn(
        agent_id=ids.agent_id_of(task.id, attempt),
        task=task,
        attempt=attempt,
        role="task",
        prompt=task.prompt,
        script=task.script,
        depth=depth if trec.depth is None else trec.depth,
        parent=trec.added_by,
        notes=notes,
    )


def retry_spawn(
    task: Task,
    attempt: int,
    *,
    previous: str,
    fixers: tuple[str, ...],
    depth: int,
    notes: tuple[str, ...],
) -> Spawn:
    """Attempt ``attempt`` of a task whose blocker a fixer removed (``retry_script`` if any)."""
    script = task.retry_script if task.retry_script is not None else task.script
    prompt = task.prompt
    if prompt:
        prompt += (
            f"\n\nThis is attempt {attempt}. The previous attempt ({previous}.md) was blocked; "
            f"{', '.join(fixers) or 'a fixer'} worked on the blocker. Continue the task."
        )
    links = (f"previous attempt: {previous}.md", *(f"fixer: {f}.md" for f in fixers))
    return Spawn(
        agent_id=ids.agent_id_of(task.id, attempt),
        task=task,
        attempt=attempt,
        role="task",
        prompt=prompt,
        script=script,
        depth=depth,
        notes=(*notes, *links),
    )


def build_spawn(build: Build, n: int, *, depth: int) -> Spawn:
    task = Task(
        id=ids.build_id(None),
        agent="build",
        command=build.command,
        shell=build.shell,
        timeout=build.timeout,
        stall_timeout=build.timeout,
    )
    return Spawn(
        agent_id=ids.build_id(n),
        task=task,
        attempt=n,
        role="build",
        prompt="",
        script=(),
        depth=depth,
    )


def dependency_notes(
    task: Task, tasks: Mapping[str, TaskRecord], agents: Mapping[str, AgentRecord]
) -> tuple[str, ...]:
    """What each dependency of ``task`` produced, one line each, for its context."""
    notes = []
    for dep in task.depends_on:
        rec = tasks[dep]
        last = rec.attempts[-1] if rec.attempts else dep
        summary = agents[last].summary if last in agents else rec.reason
        notes.append(f"{dep}: {summary or 'succeeded'} (progress: {last}.md)")
    return tuple(notes)
