"""The scheduler: the only owner of run state (dispatch and transitions).

It starts each task once its own dependencies succeeded (``mode="async"``) or wave by wave
(``mode="batch"``), asks the governor before every start, runs every agent in one TaskGroup and
turns agents' events into state. The recorder writes (progress file, then journal) before
waiters (`engine.queries`) are told; `engine.repairs` acts on what the policy decides.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.agents.base import FORCE_STOP, Agent, AgentContext
from orchestrator.engine import attempt, collecting, growth, placement
from orchestrator.engine.frontier import Frontier
from orchestrator.engine.governor import Denial, Governor
from orchestrator.engine.heard import AgentCalls
from orchestrator.engine.models import ModelTraffic, wants_model
from orchestrator.engine.queries import RunQueries
from orchestrator.engine.recorder import Recorder
from orchestrator.engine.repairs import Repairs
from orchestrator.engine.requests import RunRequests
from orchestrator.engine.spawns import dependency_notes, first_spawn, links
from orchestrator.engine.state import AgentRecord, RunSettings, Spawn, TaskRecord
from orchestrator.engine.switching import switching
from orchestrator.events import AgentEvent, AgentState, Finished
from orchestrator.isolation.checkouts import Workspaces
from orchestrator.isolation.inplace import InPlace
from orchestrator.plan.graph import graph_of
from orchestrator.plan.model import SECRET_NAMES, Plan
from orchestrator.process import group, orphans
from orchestrator.process.secrets import secret_values
from orchestrator.records.journal import Journal

AgentFactory = Callable[[str], Agent]
BURST = 64
"""Agents started in one turn of the event loop before the dispatcher yields."""


class Run(RunQueries, RunRequests, AgentCalls):
    """One execution of a plan. Create, then ``await execute()``; monitors work meanwhile."""

    def __init__(
        self,
        plan: Plan,
        settings: RunSettings,
        *,
        agents: AgentFactory,
        journal: Journal | None = None,
        on_event: Callable[[AgentRecord, str, AgentEvent | None], None] | None = None,
        done_tasks: Iterable[str] = (),
        prior_attempts: Mapping[str, int] | None = None,
        upstream: Callable[[float], None] | None = None,
        grown: Mapping[str, TaskRecord] | None = None,  # tasks added before a resume
        places: Workspaces | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.governor = Governor(plan.limits, on_charge=upstream)
        self.journal = journal
        self._agent_for = agents
        self.places = places or InPlace(plan.workspace)
        self._made: set[Path] = set()  # directories agents were given that exist
        self._prior = dict(prior_attempts or {})
        self._on_event = on_event
        self.agents: dict[str, AgentRecord] = {}
        self.tasks = {t.id: (grown or {}).get(t.id) or TaskRecord(t) for t in plan.tasks}
        self.frontier = Frontier(graph_of(plan.tasks), mode=settings.mode)
        self._ready: deque[Spawn] = deque()
        self._tg: asyncio.TaskGroup | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._burst = 0  # agents started in this turn of the loop (`_dispatch`)
        self._finished = asyncio.Event()
        self._interrupted: int | None = None
        self.repairs = Repairs(plan, self.governor, settings)
        self.started_at = time.time()
        self.ended_at: float | None = None
        self._unsettled = len(self.tasks)
        self._env = dict(os.environ if settings.env is None else settings.env)  # cheap to read
        named = (v for t in plan.tasks for k, v in t.env if k in SECRET_NAMES)
        declared = (self._env.get(n) for t in plan.tasks for n in t.secrets)  # `secrets:`
        secrets = secret_values(settings.env, *named, *declared)
        self.recorder = Recorder(
            settings, journal, secrets=secrets, on_failure=lambda why: self.cancel_all(reason=why)
        )
        escalate = self.repairs.escalate_model_traffic
        self.models = ModelTraffic(plan, settings, self.governor.ledger, self._stop, escalate)
        done = [self.tasks[tid] for tid in done_tasks if tid in self.tasks]
        for trec in done:
            trec.state, trec.final, trec.reason = "succeeded", True, "succeeded in an earlier run"
        self._unsettled, self._succeeded = self._unsettled - len(done), len(done)
        self.unstarted = self._unsettled  # tasks with no attempt in this run yet, not settled
        self.additions = growth.Additions(self.tasks.values(), plan.fixer.agent)
        self._ended_early = self._never_ran  # bound once: not a method object per agent
        self._stop_one = self._stop  # bound once: every attempt's watch holds it
        self._callbacks = contextvars.Context()  # `execute` sets the run's
        self._clock = attempt.Clock(self._callbacks)  # the agents' watches' timers

    # --- public API -------------------------------------------------------------------------

    async def execute(self) -> None:
        """Run the plan to the end (or until stopped); never raises for an agent's failure."""
        self.recorder.run_started(self.started_at)
        # One context for every agent's done callback and timer: not a copy per agent each.
        self._callbacks = contextvars.copy_context()
        self._clock = attempt.Clock(self._callbacks)
        every = self.settings.full_collection
        with switching(self.settings.switch_interval), collecting.deferred(every):
            try:
                async with self.models.open(self._env, self._agent_for), asyncio.TaskGroup() as tg:
                    self._tg = tg
                    background = [tg.create_task(self.recorder.run_background())]
                    if every is not None:
                        background.append(tg.create_task(collecting.collect_every(every)))
                    for tid in [t for t, rec in self.tasks.items() if rec.state == "succeeded"]:
                        self.frontier.succeeded(tid, self._pending)
                    self._queue(self.frontier.initial(self._pending))
                    self._dispatch()
                    self._check_finished()
                    await self._finished.wait()
                    for task in background:
                        task.cancel()
            finally:
                self._tg = None
                await self.recorder.close()  # also when run_background never began
        self.ended_at = time.time()

    def cancel(self, agent_id: str, *, tree: bool = False, force: bool = False) -> list[str]:
        """Stop one agent (and with ``tree`` the agents it spawned); idempotent. A task id
        stands for its latest attempt, or for the task itself before it started."""
        self._check_known(agent_id)
        trec = self.tasks.get(agent_id)
        if trec is not None and trec.attempts:
            agent_id = trec.attempts[-1]
        targets = self._subtree(agent_id) if tree else [agent_id]
        self.models.refuse(targets, "cancelled by request")  # its next request is refused
        why = "cancelled by request"
        return [target for target in targets if self._stop(target, "cancelled", why, force=force)]

    def cancel_all(self, *, reason: str = "cancel --all", force: bool = False) -> None:
        """Raise the fence (nothing starts, no model request is sent), stop every running agent."""
        self._raise_fence(reason)
        running = [rec for rec in self.agents.values() if rec.state == "running"]
        for rec in running:  # one pass over every group first: the signals go out together
            group.stop_recorded(rec.pid, rec.pstart, force=force)  # SIGTERM: its only one
        for rec in running:  # then what each stop records (and the grace, then SIGKILL)
            self._stop(rec.id, "cancelled", reason, force=force)
        self._dispatch()
        self._check_finished()

    def _budget_gone(self) -> None:
        """The budget is spent: raise the fence; agents still running end budget_exceeded."""
        if self.governor.fence is not None:
            return
        budget = self.plan.limits.budget_usd or 0.0
        reason = f"budget of ${budget:.2f} spent (${self.governor.spent_usd:.4f})"
        self._raise_fence(reason, spent_usd=self.governor.spent_usd)
        loop = asyncio.get_running_loop()
        for rec in list(self.agents.values()):
            if rec.state == "running":
                loop.call_soon(self._stop, rec.id, "budget_exceeded", reason)

    def _raise_fence(self, reason: str, **extra: object) -> None:
        self.governor.raise_fence(reason)
        self.models.fence(reason)
        self.recorder.fence(reason, **extra)

    # --- dispatch ---------------------------------------------------------------------------

    def _pending(self, task_id: str) -> bool:
        return self.tasks[task_id].state == "pending"

    def _succeeded_task(self, task_id: str) -> bool:
        return self.tasks[task_id].state == "succeeded"

    def _queue(self, task_ids: list[str]) -> None:
        for tid in task_ids:
            trec = self.tasks[tid]
            attempt = self._prior.get(tid, 0) + 1
            notes = dependency_notes(trec.task, self.tasks, self.agents)
            self._ready.append(first_spawn(trec, attempt, self.settings.base_depth, notes))

    def grow(self, trec: TaskRecord) -> None:
        """Take in a task added while the run goes on (`orchestrator.engine.growth` checked it)."""
        self.tasks[tid := trec.task.id] = trec
        self._unsettled, self.unstarted = self._unsettled + 1, self.unstarted + 1
        self.plan = self.repairs.plan = self.plan.adding(trec.task)
        self.recorder.task_added(trec)
        if self.frontier.add(tid, trec.task.depends_on, self._succeeded_task):
            self._queue([tid])
            self._dispatch()

    def _dispatch(self) -> None:
        """Start what may start now; sync, so a finished dependency starts its dependent at once.
        At most ``BURST`` start per turn of the loop (however many agents end in it), the rest
        on the next turns: a burst of thousands never stalls `cancel`, `status` or output."""
        gov = self.governor
        while self._ready:
            spawn = self._ready[0]
            denial = gov.denial(depth=spawn.depth)
            if denial is not None:
                self._ready.popleft()
                self._deny(spawn, denial)
                continue
            delay = gov.delay()
            if delay == math.inf:
                return
            if delay == 0 and self._burst >= BURST:
                delay = 0.0001  # this turn of the loop had its share: yield, then go on
            if delay > 0:
                if self._timer is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(delay, self._on_timer)
                return
            self._ready.popleft()
            self._start(spawn)
            self._burst += 1
            if self._burst == 1:  # a new turn of the loop: the count starts again on the next
                asyncio.get_running_loop().call_soon(setattr, self, "_burst", 0)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _deny(self, spawn: Spawn, denial: Denial) -> None:
        if denial.limit == "fence":
            return  # not started; settled as such when the run ends
        state: AgentState = "budget_exceeded" if denial.limit == "budget_usd" else "skipped"
        reason = f"spawn denied: {denial.reason}"
        self.recorder.denied(spawn.agent_id, denial.limit, reason)
        self.settle_task(spawn.task.id, state, reason)

    def _start(self, spawn: Spawn) -> None:
        assert self._tg is not None
        task = spawn.task
        rec = AgentRecord.of(spawn)
        self.agents[rec.id] = rec
        if spawn.parent in self.agents:
            self.agents[spawn.parent].child(rec.id)
        if spawn.role == "task":
            trec = self.tasks[task.id]
            self.unstarted -= not trec.attempts
            trec.attempts.append(rec.id)
            trec.state = "running"
        rec.state = "running"
        rec.started = time.time()
        rec.last_event = time.monotonic()
        recorded = self.recorder.agent_started(rec, attempt.header(rec, spawn))
        self.governor.spawned(counts=spawn.role != "build")
        rec.handle = self._tg.create_task(self._attempt(rec, spawn, recorded), name=rec.id)
        rec.handle.add_done_callback(self._ended_early, context=self._callbacks)  # found by name

    def _never_ran(self, handle: asyncio.Task[None]) -> None:
        """Its task was cancelled before its first step (its code never ran): it ends here."""
        if (rec := self.agents[handle.get_name()]).state == "running":
            self._end(rec, *(rec.stop or ("cancelled", "the run was torn down")))

    async def _attempt(self, rec: AgentRecord, spawn: Spawn, recorded: int) -> None:
        place = await placement.lease(self.places, rec, spawn, self._made)
        if isinstance(place, tuple):  # no checkout (failed), or its work has landed already
            return self._end(rec, *place)
        agent = self._agent_for(spawn.task.agent)
        ctx = self._context(rec, spawn, place.path, agent)
        try:
            with attempt.Watch(rec, ctx.task, self._stop_one, self._clock) as watch:
                await self.recorder.start_written(recorded)  # recorded before acted on
                await agent.run(ctx)
            state, reason = watch.ended
            if rec.stop is not None:  # stopped: also catch descendants that left its group
                await orphans.sweep_agent(self.settings.run_id, rec.id)  # one scan for many
            await self.models.release(rec.id)  # its token is refused; its usage is in
        except asyncio.CancelledError:
            self.models.release_nowait(rec.id)
            self._end(rec, "cancelled", "the run was torn down")
            raise
        state, reason = await placement.hand_back(self.places, rec, spawn, place, state, reason)
        self._end(rec, state, reason)

    def _context(self, rec: AgentRecord, spawn: Spawn, path: Path, agent: Agent) -> AgentContext:
        """The attempt's context (a plain call: the attempt's coroutine keeps none of this
        call's scratch)."""
        hooks = attempt.Hooks(self, rec)
        model = None
        if wants_model(agent, spawn.task):
            model = self.models.grant(rec, spawn.task, hooks.emit)
        return attempt.context(
            rec, spawn, workspace=path, settings=self.settings, env=self._env,
            limits=self.plan.limits, emit=hooks.emit, emit_output=hooks.output,
            on_process=hooks.on_process,
            budget=self.governor, model=model, pass_env=agent.pass_env, add_task=hooks.add_task,
        )  # fmt: skip

    def _stop(self, agent_id: str, state: AgentState, reason: str, *, force: bool = False) -> bool:
        rec = self.agents.get(agent_id)
        if rec is None:
            trec = self.tasks.get(agent_id)
            if trec is not None and trec.state == "pending":
                self.settle_task(agent_id, state, f"not started: {reason}")
                return True
            return False
        if rec.state != "running" or rec.handle is None:
            return False
        if force:
            group.signal_recorded(rec.pid, rec.pstart, signal.SIGKILL)  # if still ours
        if rec.stop is None:
            rec.stop = (state, reason)
            grace = 0.0 if force else self.plan.limits.grace
            line = self.recorder.stopping(rec, reason, grace)
            if not force:  # now, not when its task next runs; the grace counts from here
                group.terminate_recorded(rec.pid, rec.pstart)
            if self._on_event is not None:
                self._on_event(rec, line, None)
            rec.handle.cancel(FORCE_STOP if force else None)
            return True
        if force and not rec.force:
            rec.force = True
            rec.handle.cancel(FORCE_STOP)  # a second cancel cuts the grace short
        return False

    def agent_adds(self, rec: AgentRecord, request: Mapping[str, object]) -> dict[str, Any]:
        """A task an agent asks to add (`attempt.Hooks.add_task`)."""
        return growth.answer(self, request, adder=rec.id)

    # --- transitions ------------------------------------------------------------------------

    def _end(self, rec: AgentRecord, state: AgentState, reason: str) -> None:
        rec.state = state
        rec.reason = reason
        rec.ended = time.time()
        if isinstance(rec.terminal, Finished):
            rec.summary = rec.terminal.summary
        actions = self.repairs.decide(rec)
        self.recorder.agent_ended(rec, links(actions))
        self.governor.released()
        if rec.done is not None:
            rec.done.set()
        if (tell := self._on_event) is not None:
            self.recorder.when_written(functools.partial(tell, rec, f"status: {state}", None))
        self.repairs.apply(rec, actions, self)
        self._dispatch()
        self._check_finished()

    # --- what recovery may do (`orchestrator.engine.repairs.Host`) -------------------------------

    def enqueue_first(self, spawn: Spawn) -> None:
        self._ready.appendleft(spawn)

    def start_now(self, spawn: Spawn) -> None:
        self._start(spawn)

    def settle_task(self, task_id: str, state: AgentState, reason: str) -> None:
        trec = self.tasks[task_id]
        if trec.final:
            return
        self._unsettled -= 1
        self.unstarted -= not trec.attempts
        self._succeeded += state == "succeeded"
        trec.state = state
        trec.reason = reason
        trec.final = True
        self.recorder.task_settled(trec)
        if trec.settled is not None:
            trec.settled.set()
        if state == "succeeded":
            self._queue(self.frontier.succeeded(task_id, self._pending))
            self.repairs.task_succeeded(task_id, self._start)
        else:
            for child in self.frontier.dependents(task_id):
                if self.tasks[child].state == "pending":
                    self.settle_task(child, "skipped", f"dependency {task_id} ended {state}")
        self._queue(self.frontier.settled(task_id, self._pending))

    def _check_finished(self) -> None:
        """End the run when nothing runs or can start; run the final build check first."""
        if self.governor.running or self._finished.is_set():
            return
        fence = self.governor.fence
        if self._ready and fence is None:
            return
        if self._unsettled:
            for trec in list(self.tasks.values()):
                if trec.final:
                    continue
                if trec.state == "pending" and fence is not None:
                    self.settle_task(trec.task.id, "cancelled", f"not started: {fence}")
                elif trec.state != "pending":  # nothing runs for it and nothing will
                    self.settle_task(trec.task.id, trec.state, trec.reason or "no way forward")
        if self._unsettled or (self.settings.keep_open and fence is None):
            return  # skips cascade from the settles above; --keep-open waits for additions
        build = self.repairs.final_build(
            all_succeeded=self._succeeded == len(self.tasks), fenced=fence is not None
        )
        if build is not None:
            self._start(build)
            return
        self._finished.set()
