"""Carrying out recovery: what an ended agent means for the run, and the build checks.

The pure policy (`orchestrator.engine.recovery`) decides; `Repairs` feeds it the agents that
ended, keeps its state, the build checks' history and the escalations behind its own methods,
and carries out the actions through the small `Host` interface the scheduler offers. The
build's result reaches it as an event (`BuildChecked`) recorded on the build agent's record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from orchestrator import ids
from orchestrator.engine import blockers, recovery, spawns
from orchestrator.engine.governor import Governor
from orchestrator.engine.state import AgentRecord, RunSettings, Spawn, TaskRecord
from orchestrator.events import AgentState, Blocked, BuildChecked, Failed
from orchestrator.plan.model import Plan


class Host(Protocol):
    """What the scheduler lets recovery do: read its records, queue and start agents, settle."""

    agents: dict[str, AgentRecord]
    tasks: dict[str, TaskRecord]

    def enqueue_first(self, spawn: Spawn) -> None:
        """Start ``spawn`` before anything else that waits for a slot."""

    def start_now(self, spawn: Spawn) -> None:
        """Start ``spawn`` at once (a build check)."""

    def settle_task(self, task_id: str, state: AgentState, reason: str) -> None:
        """The task has its final state."""


class Repairs:
    """One run's recovery: blockers, fixers, retries, build checks and escalations."""

    def __init__(self, plan: Plan, governor: Governor, settings: RunSettings) -> None:
        self.plan = plan
        self._governor = governor
        self._base_depth = settings.base_depth
        self._commands = (settings.resume_hint, settings.tail_hint)
        """How a person continues the run and reads a progress file (for next steps)."""
        self._policy = recovery.RecoveryState()
        self._builds: list[str] = []
        self._results: dict[str, BuildChecked] = {}
        self._build_state: str | None = None
        self._final_started = False
        self._escalations: list[dict[str, object]] = []
        batches = dict(plan.batches)
        self._after = [set(batches.get(name, (name,))) for name in plan.build.after]

    # --- what the views and the exit code read -------------------------------------------------

    @property
    def builds(self) -> list[str]:
        return list(self._builds)

    @property
    def build_state(self) -> str | None:
        """None (no build yet), running, passed, skipped, escalated, or the last build's end."""
        return self._build_state

    @property
    def escalations(self) -> list[dict[str, object]]:
        return list(self._escalations)

    # --- agents that ended -----------------------------------------------------------------------

    def record_build(self, agent_id: str, result: BuildChecked) -> None:
        """A build check reported its result (an event from the build agent)."""
        self._results[agent_id] = result

    def capacity(self, subject: str | None = None) -> recovery.Capacity:
        """What the limits allow now; ``subject`` is the task (None: the build) whose blocker
        is being decided, so the policy knows whether the plan can make it a fixer."""
        gov, lim = self._governor, self.plan.limits
        refusal = ""
        if gov.fence is not None:
            refusal = f"the run is stopping ({gov.fence})"
        elif gov.budget_spent:
            refusal = "the budget is spent"
        return recovery.Capacity(
            agents_left=gov.agents_left,
            max_agents=lim.max_agents,
            max_depth=lim.max_depth,
            max_fix_cycles=self.plan.build.max_fix_cycles,
            fix_timeouts=self.plan.fixer.fix_timeouts,
            refusal=refusal,
            no_fixer=spawns.why_no_fixer(self.plan, subject),
            resume=self._commands[0],
            tail=self._commands[1],
        )

    def decide(self, rec: AgentRecord) -> tuple[recovery.Action, ...] | None:
        """The policy's actions for an agent that just ended; None when it simply ended.

        `spawns.links` renders them for the agent's progress file; `apply` carries them out."""
        event: recovery.Event
        subject: str | None = None
        if rec.role == "task" and rec.state == "escalated" and rec.terminal is None:
            # no agent ran: its place says a person must act first (`placement.lease`)
            step = f"remove the blocker of task {rec.task_id} by hand, then continue: "
            blocker = " ".join(rec.reason.split())[:300]
            return (recovery.Escalate(rec.task_id, rec.reason, (), step + self._commands[0],
                                      blocker),)  # fmt: skip
        if rec.role == "task":
            subject = rec.task_id
            kind = rec.terminal.kind if isinstance(rec.terminal, Failed | Blocked) else ""
            kind = "" if kind == "agent" else kind
            known = rec.task_id in self._policy.subjects
            fixable = blockers.is_fixable(
                rec.state, kind=kind, fix_timeouts=self.plan.fixer.fix_timeouts
            )
            if not known and not fixable and kind != "permission" and rec.state != "lost":
                return None  # the common case stays off the policy's copy-on-write path
            event = recovery.AttemptEnded(
                rec.task_id, rec.attempt, rec.state, rec.reason, kind, rec.depth,
                stalled=rec.reason.startswith("stalled"),
            )  # fmt: skip
        elif rec.role == "fixer":
            event = recovery.FixerEnded(rec.id, rec.state, rec.summary or rec.reason)  # type: ignore[arg-type]
        else:
            result = self._results.get(rec.id)
            if rec.state == "succeeded" or result is None:
                return None
            event = recovery.BuildFailed(
                rec.attempt, result.exit_code, result.tail, result.failing_tests, rec.reason
            )
        self._policy, actions = recovery.decide(self._policy, event, self.capacity(subject))
        return actions

    def apply(
        self, rec: AgentRecord, actions: tuple[recovery.Action, ...] | None, host: Host
    ) -> None:
        """Carry out what the recovery policy decided about ``rec`` (None: it simply ended)."""
        if actions is None:
            if rec.role == "task":
                host.settle_task(rec.task_id, rec.state, rec.reason)
            elif rec.role == "build":
                self._build_state = "passed" if rec.state == "succeeded" else rec.state
            return
        for action in actions:
            match action:
                case recovery.SpawnFixer():
                    spawn = spawns.fixer_spawn(self.plan, action, rec, self._build_output())
                    assert spawn is not None, "the policy is told (Capacity.no_fixer) first"
                    for tid in action.tasks:
                        host.tasks[tid].fixer(action.fixer_id)
                        host.tasks[tid].state = "blocked"
                    host.enqueue_first(spawn)
                case recovery.RetryTask(task_id=tid, attempt=attempt):
                    host.enqueue_first(self._retry_spawn(host, tid, attempt))
                case recovery.Rebuild():
                    host.start_now(self._next_build())
                case recovery.Escalate(task_id=tid, reason=why):
                    self._escalate(action, self._files_of(host, tid))
                    if tid is not None:
                        host.settle_task(tid, "escalated", why)
                case recovery.EndTask(task_id=tid, state=state, reason=why):
                    if tid is None:
                        self._build_state = state
                    else:
                        host.settle_task(tid, state, why)  # type: ignore[arg-type]
                case recovery.Wait():
                    if rec.role == "task" and rec.state == "blocked":
                        host.tasks[rec.task_id].state = "blocked"

    def escalate_model_traffic(self, reason: str) -> None:
        """The gateway stopped the run's model traffic (a bad key, no credit): escalated once,
        whatever number of agents it stopped."""
        self._escalations.append(
            {
                "task": "(model traffic)",
                "blocker": reason,
                "reason": "the API refused the run's key, so the gateway refuses every request "
                "of the run from then on: no agent can reach the model",
                "tried": [],
                "next_step": "check ANTHROPIC_API_KEY (and the account's billing), then run "
                "the plan again with --resume",
                "files": [],
            }
        )

    def _escalate(self, action: recovery.Escalate, files: list[str]) -> None:
        if action.task_id is None:
            self._build_state = "escalated"
        self._escalations.append(
            {
                "task": action.task_id or "(the build)",
                "blocker": action.blocker,
                "reason": action.reason,
                "tried": list(action.tried),
                "next_step": action.next_step,
                "files": files,
            }
        )

    def _files_of(self, host: Host, task_id: str | None) -> list[str]:
        if task_id is None:
            return [f"{b}.md" for b in self._builds]
        trec = host.tasks[task_id]
        return [f"{a}.md" for a in (*trec.attempts, *trec.fixers)]

    def _retry_spawn(self, host: Host, task_id: str, attempt: int) -> Spawn:
        trec = host.tasks[task_id]
        return spawns.retry_spawn(
            trec.task,
            attempt,
            previous=trec.attempts[-1] if trec.attempts else task_id,
            fixers=tuple(trec.fixers),
            depth=self._base_depth if trec.depth is None else trec.depth,
            notes=spawns.dependency_notes(trec.task, host.tasks, host.agents),
        )

    def _build_output(self) -> str:
        result = self._results.get(self._builds[-1]) if self._builds else None
        return result.tail if result is not None and result.exit_code != 0 else ""

    # --- build checks ------------------------------------------------------------------------

    def _next_build(self) -> Spawn:
        n = len(self._builds) + 1
        self._builds.append(ids.build_id(n))
        self._build_state = "running"
        return spawns.build_spawn(self.plan.build, n, depth=self._base_depth)

    def task_succeeded(self, task_id: str, start: Callable[[Spawn], None]) -> None:
        """A build check after a named task or batch (``build.after``) once all of it succeeded."""
        for after in self._after:
            after.discard(task_id)
            if not after and self._build_state != "running":
                self._after.remove(after)
                start(self._next_build())
                return

    @property
    def final_started(self) -> bool:
        """The build check at the end of the run has been started (it runs once)."""
        return self._final_started

    def final_build(self, *, all_succeeded: bool, fenced: bool) -> Spawn | None:
        """The build check at the end of the run, once: its spawn, or None when there is none
        to run (no build, already run, the run is stopping, or a task did not succeed)."""
        if not self.plan.build.command or self._final_started or fenced:
            return None
        self._final_started = True
        if all_succeeded:
            return self._next_build()
        if self._build_state in (None, "passed"):
            self._build_state = "skipped"
        return None
