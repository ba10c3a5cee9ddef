"""The node side: a `NodeHost` lives in one Ray actor per node and runs attempts there.

Each attempt is the agent's own code (`AgentPool`, the same kinds as a local run) in a
worktree of the attempt's base (`workspace.NodeRepo`: one an earlier attempt left exactly as
it was made, when there is one), so it starts its programs the same way: its own process
group, the parent-death signal, SIGTERM, grace, SIGKILL and the sweep for descendants that
left the group (found by the run's id in their environment).

Its events wait here until the driver polls them, one poll in flight per node for all of
the node's attempts (`poll`): a poll returns at once when any attempt has something to say,
after a short window that lets a burst of lines (of one attempt or of several) travel as one
message; the batch that reports an attempt's end also brings its change.

Attempts are confined as the run decided, by a decision made on this node (`confine`): its
own bubblewrap and cgroups. Tasks an attempt asks to add (the ``add_task`` tool, or
`orchestrator add` through the host's socket, `asks`) travel with its events; the driver
answers them as that attempt with its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.agents.base import AgentContext
from orchestrator.agents.pool import AgentPool
from orchestrator.cluster import asks, workspace
from orchestrator.cluster.confine import node_confinement
from orchestrator.cluster.wire import AttemptSpec, Batch, Change, NodeReport
from orchestrator.events import AgentEvent, Failed, Started
from orchestrator.plan.model import SECRET_NAMES, Plan, SandboxMode
from orchestrator.process import orphans
from orchestrator.process.env import QUOTA_VAR
from orchestrator.process.procfs import close_marked, open_marked, process_start_time
from orchestrator.sandbox.confinement import Confinement

PREFIX = "orchestrator-node-"
POLL_WAIT = 30.0
"""A poll with nothing to say returns after this long. A dead node fails the calls in flight
to its host at once (Ray), so this only bounds how long an idle call lives."""
ACTIVITY_EVERY = 1.0
"""Output that is not a whole line (progress dots) answers a poll at most this often: enough
for the driver's stall clock, few calls for an agent that only draws a progress bar."""
ASK_TIMEOUT = 60.0
"""How long an addition waits for the driver's answer (it comes with the next poll)."""


def _left_behind(run_id: str, agent_ids: list[str]) -> set[str]:
    """Those of ``agent_ids`` with a process still alive (one that left its group carries
    their marker): one scan of ``/proc`` for all of them. Synchronous: call it in a thread."""
    found = open_marked(run_id, agent_ids)
    try:
        return {marked.agent_id for marked in found}
    finally:
        close_marked(found)


def _unanswered(why: str) -> dict[str, Any]:
    return {"ok": False, "refused": {"rule": "no-answer", "message": why, "hint": ""}}


@dataclass(slots=True)
class _Running:
    spec: AttemptSpec
    checkout: Path | None = None
    """Its worktree, once it has one."""
    task: asyncio.Task[None] | None = None
    events: list[AgentEvent] = field(default_factory=list)
    nudged: bool = False
    """Its processes wrote something that is not a whole line, and it was not answered for
    `ACTIVITY_EVERY`: the next poll says so."""
    active: bool = False
    done: bool = False
    stopped: bool = False
    """A stop came (perhaps while `NodeHost.start` was still checking out): it never starts."""
    answered: float = 0.0
    """When a poll last returned (monotonic)."""
    leaders: dict[int, int | None] = field(default_factory=dict)
    """The processes it started (pid -> start time): who may add tasks as this attempt."""
    asks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def has_news(self) -> bool:
        return bool(self.events or self.done or self.asks or self.nudged)


class NodeHost:
    """The attempts on this node, by agent id; its methods run on the actor's event loop."""

    def __init__(self, run_id: str, node: str) -> None:
        self.run_id = run_id
        self.node = node
        self._root = Path(tempfile.mkdtemp(prefix=PREFIX))
        self._lock = workspace.hold(self._root)
        self._attempts: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._pool: AgentPool | None = None
        self._repo = workspace.NodeRepo(self._root)
        self._confinement: Confinement | None = None
        self._socket = self._root / "control" / "add.sock"
        self._serving = contextlib.AsyncExitStack()
        self._numbers = itertools.count(1)

    async def ready(self, plan: Plan, mode: SandboxMode) -> NodeReport:
        """Remove what hosts that died left on this node (their driver or node died before
        they could clean up), decide how this node confines the run's attempts (``mode``:
        the driver's decision), open the socket its agents add tasks through; the report
        names the API-key variables in this node's environment (the driver refuses such a
        node) and its confinement."""
        await asyncio.to_thread(workspace.sweep_stale, self._root.parent, PREFIX)
        held = tuple(sorted(name for name in SECRET_NAMES if os.environ.get(name)))
        conf, report = await asyncio.to_thread(node_confinement, plan, mode, self._root)
        self._confinement = conf
        self._pool = AgentPool(plan)
        self._socket.parent.mkdir(mode=0o700, exist_ok=True)
        await self._serving.enter_async_context(asks.open_ask_server(self._socket, self._relay))
        return replace(report, held=held)

    async def start(self, spec: AttemptSpec, bundle: list[Any]) -> None:
        """Check the base out and start the agent; returns once it runs. ``bundle`` holds the
        base's bundle as an object reference (nested, so Ray moves it only when this node
        has not seen that base yet)."""
        run = self._attempts[spec.agent_id] = _Running(spec)

        async def fetch() -> bytes:
            data: bytes = await bundle[0]
            return data

        try:
            run.checkout = checkout = await self._repo.take(spec.base, fetch)
        except workspace.WorkspaceError as exc:
            run.events.append(Failed(f"node {self.node}: cannot check out the workspace: {exc}"))
            run.done = True
            self._wake.set()
            return
        if run.stopped:  # stopped while its checkout was made: nothing of it runs
            run.done = True
            self._wake.set()
            return
        assert self._pool is not None, "ready() comes first"
        agent = self._pool(spec.kind)
        responses = checkout.parent / "responses"  # removed when the checkout is kept
        responses.mkdir()
        env = {**spec.env, QUOTA_VAR: str(self._socket)}  # additions go through this host
        where = checkout / spec.prefix if spec.prefix else checkout
        where.mkdir(parents=True, exist_ok=True)  # a folder git has no file in yet
        ctx = AgentContext(
            agent_id=spec.agent_id,
            task=spec.task,
            attempt=spec.attempt,
            prompt=spec.prompt,
            script=spec.script,
            workspace=where,
            responses=responses,
            env=env,
            emit=lambda event: self._said(run, event),
            on_process=lambda pid: self._spawned(run, pid),
            on_activity=lambda: self._heard(run),
            grace=spec.grace,
            depth=spec.depth,
            parent=spec.parent,
            context_notes=spec.notes,
            model=spec.model,
            add_task=lambda request: self._ask(run, dict(request)),
            sandbox=self._confinement,
        )
        work = agent.run(ctx)
        run.task = asyncio.get_running_loop().create_task(self._run(run, work))
        # Its end in a callback, not in `_run`'s ``finally``: a stop that comes before the
        # task's first step cancels code that never ran (and would never say it ended).
        run.task.add_done_callback(lambda _: self._ended(run, work))

    async def _run(self, run: _Running, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # sent to the driver, whose attempt turns it into a state
            run.events.append(Failed(f"{type(exc).__name__}: {exc}"))

    def _ended(self, run: _Running, work: Coroutine[Any, Any, None]) -> None:
        work.close()  # never started (cancelled before its first step): nothing left unawaited
        run.done = True
        for waiter in run.waiting.values():
            if not waiter.done():
                waiter.set_result(_unanswered("the attempt ended before the run answered"))
        self._wake.set()

    def _spawned(self, run: _Running, pid: int) -> None:
        run.leaders[pid] = process_start_time(pid)

    async def _ask(self, run: _Running, request: dict[str, Any]) -> dict[str, Any]:
        """Relay a task the attempt asks to add; the driver's answer (or why there is none)."""
        number = next(self._numbers)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        run.waiting[number] = answer
        run.asks.append((number, request))
        self._wake.set()
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                return await answer
        except TimeoutError:
            return _unanswered(f"the run did not answer within {ASK_TIMEOUT:g} s")
        finally:
            run.waiting.pop(number, None)

    async def _relay(self, pid: int, request: dict[str, Any]) -> dict[str, Any] | None:
        """An addition through the socket: as the attempt whose process ``pid`` is."""
        running = [r for r in self._attempts.values() if not r.done]
        leaders = {p: start for r in running for p, start in r.leaders.items()}
        leader = asks.owner(pid, leaders, own_pid=os.getpid())
        run = next((r for r in running if leader in r.leaders), None)
        if run is None:
            return None
        return await self._ask(run, request)

    def _said(self, run: _Running, event: AgentEvent) -> None:
        if isinstance(event, Started):
            event = replace(event, node=self.node)
        run.events.append(event)
        self._wake.set()

    def _heard(self, run: _Running) -> None:
        run.active = True
        if not run.nudged and time.monotonic() - run.answered >= ACTIVITY_EVERY:
            run.nudged = True
            self._wake.set()

    async def poll(self, window: float) -> dict[str, Batch]:
        """What every attempt on this node said since the last poll, by agent id (those
        with nothing to say left out): waits up to `POLL_WAIT` for any of them, then
        ``window`` more so that a burst travels as one message. An ended attempt's batch
        brings its change (and it is forgotten here)."""
        if not any(run.has_news for run in self._attempts.values()):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_WAIT):
                    await self._wake.wait()
            await asyncio.sleep(window)
        self._wake.clear()
        now = time.monotonic()
        batches: dict[str, Batch] = {}
        ended: list[str] = []
        for agent_id, run in list(self._attempts.items()):
            if not run.has_news:
                continue
            run.nudged, run.answered = False, now
            events, run.events = tuple(run.events), []
            active, run.active = run.active, False
            wanted, run.asks = tuple(run.asks), []
            batches[agent_id] = Batch(events, active, run.done, asks=wanted)
            if run.done:
                ended.append(agent_id)
        if ended:  # their changes, collected side by side
            left = await asyncio.to_thread(_left_behind, self.run_id, ended)
            async with asyncio.TaskGroup() as tg:
                changes = {a: tg.create_task(self._collect(a, a not in left)) for a in ended}
            for agent_id, task in changes.items():
                change = task.result()
                if isinstance(change, str):
                    batches[agent_id] = replace(batches[agent_id], error=change)
                else:
                    batches[agent_id] = replace(batches[agent_id], change=change)
        return batches

    async def _collect(self, agent_id: str, gone: bool) -> Change | str:
        """`finish`, or why its change could not be taken (that attempt fails, no other)."""
        try:
            return await self.finish(agent_id, gone=gone)
        except workspace.WorkspaceError as exc:
            return f"node {self.node}: cannot take the attempt's change: {exc}"

    async def answer(self, agent_id: str, answers: Mapping[int, dict[str, Any]]) -> None:
        """Hand the driver's ``answers`` (by request number) to the additions of
        ``agent_id`` that wait for them (none: the attempt ended meanwhile)."""
        run = self._attempts.get(agent_id)
        for number, reply in answers.items():
            waiter = run.waiting.get(number) if run is not None else None
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)

    async def stop(self, agent_id: str, force: bool) -> None:
        """Stop the attempt's processes (SIGTERM, grace, SIGKILL; ``force``: SIGKILL now),
        then sweep descendants that left its group."""
        run = self._attempts.get(agent_id)
        if run is not None:
            run.stopped = True
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            if force:
                await asyncio.sleep(0)
                run.task.cancel()  # a second cancel cuts the grace short, as on the driver
            await asyncio.wait({run.task})  # its end, without swallowing a cancel of this call
        await asyncio.to_thread(orphans.sweep_run, self.run_id, agent_id=agent_id)

    async def finish(self, agent_id: str, *, gone: bool) -> Change:
        """The attempt's change to its workspace. Its checkout is kept for the next attempt
        when the attempt left it as it was made and ``gone`` (no process of it is left: the
        caller looked), else removed (`workspace.NodeRepo.give_back`)."""
        run = self._attempts.pop(agent_id)
        change = Change(agent_id, run.spec.base, run.spec.base, b"")
        if run.checkout is None:
            return change
        clean = False
        try:
            change, clean = await workspace.examine(run.checkout, run.spec.base, agent_id)
        finally:
            await self._repo.give_back(run.checkout, run.spec.base, clean=clean and gone)
        return change

    async def shutdown(self) -> None:
        """Stop everything this host runs and sweep the run's processes on this node."""
        for agent_id in list(self._attempts):
            await self.stop(agent_id, True)
        await asyncio.to_thread(orphans.sweep_run, self.run_id)
        await self._serving.aclose()
        await asyncio.to_thread(shutil.rmtree, self._root, True)
        os.close(self._lock)

    async def prune(self) -> None:
        await self._repo.prune()
