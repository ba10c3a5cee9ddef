"""Turning the recovery policy's decisions into agents: fixers, retries and build checks.

Pure functions from the plan and a decision to a `Spawn`; the scheduler queues what they make.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator import recovery
from orchestrator.buildcheck import BuildAgent
from orchestrator.events import Failed
from orchestrator.plan import AGENT_KINDS, PRESETS, Build, Plan, Task
from orchestrator.records import AgentRecord, Spawn


class Repairs:
    """One run's recovery state and build checks: what an ended agent means for the run.

    The scheduler owns it and carries out the actions it returns; it holds the policy's
    state, the build agent and its results, and the escalations for the report.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.state = recovery.RecoveryState()
        self.builder = BuildAgent()
        self.builds: list[str] = []
        self.build_state: str | None = None
        self.final_started = False
        self.escalations: list[dict[str, object]] = []

    def decide(
        self, rec: AgentRecord, capacity: Callable[[], recovery.Capacity]
    ) -> tuple[recovery.Action, ...] | None:
        """The policy's actions for an agent that just ended; None when it simply ended."""
        event: recovery.Event
        if rec.role == "task":
            kind = rec.terminal.kind if isinstance(rec.terminal, Failed) else ""
            known = rec.task_id in self.state.subjects
            fixable = recovery.is_fixable(
                rec.state, kind=kind, fix_timeouts=self.plan.fixer.fix_timeouts
            )
            if not known and not fixable:
                return None  # the common case stays off the policy's copy-on-write path
            event = recovery.AttemptEnded(
                rec.task_id, rec.attempt, rec.state, rec.reason, kind, rec.depth,
                stalled=rec.reason.startswith("stalled"),
            )  # fmt: skip
        elif rec.role == "fixer":
            event = recovery.FixerEnded(rec.id, rec.state, rec.summary or rec.reason)  # type: ignore[arg-type]
        else:
            result = self.builder.results.get(rec.id)
            if rec.state == "succeeded" or result is None:
                return None
            event = recovery.BuildFailed(
                rec.attempt, result.exit_code, result.tail, result.failing_tests
            )
        self.state, actions = recovery.decide(self.state, event, capacity())
        return actions

    def fixer_not_started(
        self, action: recovery.SpawnFixer, why: str, capacity: recovery.Capacity
    ) -> tuple[recovery.Action, ...]:
        """The plan cannot make this fixer: the policy hears it failed at once."""
        failed = recovery.FixerEnded(action.fixer_id, "failed", why)
        self.state, actions = recovery.decide(self.state, failed, capacity)
        return actions

    def escalate(self, action: recovery.Escalate, files: list[str], fallback: str) -> None:
        blocker = next(
            (f.blocker.summary() for f in reversed(list(self.state.fixers.values()))
             if action.task_id in f.serves),
            fallback,
        )  # fmt: skip
        if action.task_id is None:
            self.build_state = "escalated"
        self.escalations.append(
            {
                "task": action.task_id or "(the build)",
                "blocker": blocker,
                "reason": action.reason,
                "tried": list(action.tried),
                "next_step": action.next_step,
                "files": files,
            }
        )

    def build_output(self) -> str:
        result = self.builder.results.get(self.builds[-1]) if self.builds else None
        return result.tail if result is not None and result.exit_code != 0 else ""

    def next_build(self, *, depth: int) -> Spawn:
        n = len(self.builds) + 1
        self.builds.append(f"build-{n}")
        self.build_state = "running"
        return build_spawn(self.plan.build, n, depth=depth)


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


def fixer_spawn(
    plan: Plan, action: recovery.SpawnFixer, blocked: AgentRecord, build_output: str
) -> Spawn | None:
    """The fixer the plan's ``fixer:`` section makes for this blocker; None if it makes none."""
    spec = plan.fixer
    task_id = action.blocker.task_id
    base = plan.task(task_id) if task_id is not None else None
    kind = spec.agent or (base.agent if base is not None else "scripted")
    if kind == "scripted" and not spec.script:
        return None
    if kind == "command" and not spec.command:
        return None
    if kind not in AGENT_KINDS and kind not in PRESETS:
        return None
    prompt = recovery.fixer_prompt(
        spec.prompt,
        blocker=action.blocker,
        progress_path=f"{action.blocker.agent_id}.md",
        last_lines=list(blocked.lines),
        build_output=build_output,
        tried=action.tried,
    )
    template = base if base is not None else Task("build")
    task = Task(
        id=task_id or "build",
        agent=kind,
        prompt=prompt,
        command=spec.command,
        shell=spec.shell,
        script=spec.script,
        model=spec.model or template.model,
        timeout=spec.timeout or template.timeout,
        stall_timeout=spec.stall_timeout or template.stall_timeout,
        max_turns=spec.max_turns or template.max_turns,
        env=template.env,
        pass_env=template.pass_env,
    )
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
        agent_id=recovery.agent_id_of(task.id, attempt),
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
        id="build",
        agent="build",
        command=build.commands,
        shell=True,
        timeout=build.timeout,
        stall_timeout=build.timeout,
    )
    return Spawn(
        agent_id=f"build-{n}",
        task=task,
        attempt=n,
        role="build",
        prompt="",
        script=(),
        depth=depth,
    )
