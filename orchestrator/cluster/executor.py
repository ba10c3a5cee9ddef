"""The driver side of an attempt: `RemoteAgent` runs an attempt of any process or API agent
on a node of the run's `Cluster`, behind the same seam as a local agent.

The driver keeps everything that is run state: the scheduler starts, times and stops a
remote attempt exactly like a local one (its `run` is cancelled), and the events that come
back go through the same `emit` into the progress file and the journal. An attempt's end
(`Finished`, `Failed`, `Blocked`) is told only once its change has been applied, so an
attempt whose change does not apply fails instead of succeeding. A host whose node dies
ends its attempts ``lost`` (recovery retries them on a live node).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.agents.base import FORCE_STOP, Agent, AgentContext
from orchestrator.cluster import asks
from orchestrator.cluster.nodes import Cluster, Host
from orchestrator.cluster.polling import Delivery, expecting
from orchestrator.cluster.wire import AttemptSpec, Change
from orchestrator.cluster.workspace import WorkspaceError
from orchestrator.events import Blocked, Failed, Finished
from orchestrator.plan.model import Plan

LOCAL_KINDS = frozenset({"build"})
"""Kinds that stay on the driver: the build check tests the integrated workspace."""


@dataclass(slots=True)
class RemoteAgent:
    """An agent kind whose attempts run on the cluster (same seam as any `Agent`)."""

    inner: Agent
    kind: str
    cluster: Cluster

    @property
    def uses_model(self) -> bool:
        return self.inner.uses_model

    @property
    def pass_env(self) -> tuple[str, ...]:
        return self.inner.pass_env

    async def run(self, ctx: AgentContext) -> None:
        base, bundle, prefix = await self.cluster.base(ctx.workspace)
        host = await self.cluster.place()
        spec = AttemptSpec(
            agent_id=ctx.agent_id, run_id=ctx.env.get("ORCHESTRATOR_RUN_ID", ""),
            kind=self.kind, task=ctx.task, attempt=ctx.attempt, prompt=ctx.prompt,
            script=ctx.script, env=dict(ctx.env), grace=ctx.grace, depth=ctx.depth,
            parent=ctx.parent, notes=ctx.context_notes, model=ctx.model,
            base=base, prefix=prefix,
        )  # fmt: skip
        ends: list[Finished | Failed | Blocked] = []
        try:
            change = await self._attempt(host, spec, bundle, ctx, ends)
        except Exception as exc:
            if not self.cluster.is_lost(exc):
                raise
            self.cluster.lost(host)
            ctx.emit(Failed(f"node {host.node} lost: {type(exc).__name__}", kind="lost"))
            return
        finally:
            host.running -= 1
        try:
            await self.cluster.integrate(change, ctx.workspace)
        except WorkspaceError as exc:
            ctx.emit(Failed(f"its change does not apply to the workspace: {exc}"))
            return
        for event in ends:
            ctx.emit(event)

    async def _attempt(
        self, host: Host, spec: AttemptSpec, bundle: Any, ctx: AgentContext, ends: list[Any]
    ) -> Change:
        assert host.poller is not None
        async with expecting(host.poller, ctx.agent_id) as batches:
            try:
                await host.actor.start.remote(spec, [bundle])
                return await self._relay(host, batches, ctx, ends)
            except asyncio.CancelledError as stop:
                await self._wind_down(host, batches, ctx, ends, force=FORCE_STOP in stop.args)
                raise
            except Exception as exc:
                if not self.cluster.is_lost(exc):  # a fault on the node: stop what runs there
                    with contextlib.suppress(*self.cluster.lost_errors):
                        await self._stop(host, ctx)
                raise

    async def _wind_down(
        self,
        host: Host,
        batches: asyncio.Queue[Delivery],
        ctx: AgentContext,
        ends: list[Any],
        *,
        force: bool,
    ) -> None:
        """Stopped: the attempt's processes on its node go, then its last words come back and
        its work is applied as far as it goes (a node that died meanwhile left nothing)."""
        gone: tuple[type[BaseException], ...] = (WorkspaceError, *self.cluster.lost_errors)
        try:
            await self._stop(host, ctx, force=force)
            change = await self._relay(host, batches, ctx, ends)
            await self.cluster.integrate(change, ctx.workspace)
        except gone:
            pass

    @staticmethod
    async def _relay(
        host: Host,
        batches: asyncio.Queue[Delivery],
        ctx: AgentContext,
        ends: list[Finished | Failed | Blocked],
    ) -> Change:
        """The attempt's batches (its node's poller brings them) until it is over; ends are
        held back (see the module). Tasks the attempt asked to add are answered here, as this
        attempt, and the answers sent to its host."""
        while True:
            batch = await batches.get()
            if isinstance(batch, BaseException):
                raise batch
            if batch.active or batch.events:
                ctx.on_activity()
            for event in batch.events:
                if isinstance(event, Finished | Failed | Blocked):
                    ends.append(event)
                else:
                    ctx.emit(event)
            if batch.asks:
                answers = {number: await _addition(ctx, req) for number, req in batch.asks}
                await host.actor.answer.remote(ctx.agent_id, answers)
            if batch.done:
                if batch.change is None:  # its change could not be taken: it fails
                    ends.insert(0, Failed(batch.error))
                    return Change(ctx.agent_id, "", "", b"")
                return batch.change

    @staticmethod
    async def _stop(host: Host, ctx: AgentContext, *, force: bool = False) -> None:
        """SIGTERM, grace, SIGKILL on the node; cancelled again meanwhile: SIGKILL now."""
        force = force or ctx.grace <= 0
        while True:
            try:
                await host.actor.stop.remote(ctx.agent_id, force)
                return
            except asyncio.CancelledError:
                if force:
                    raise
                force = True


async def _addition(ctx: AgentContext, request: dict[str, Any]) -> dict[str, Any]:
    """The run's answer to a task a remote attempt asks to add: checked as a local agent's
    (`growth.answer` for this attempt), the request's shape again first."""
    why = asks.problem(request)
    if why is not None:
        return {"ok": False, "code": 2, "error": f"error: {why}"}
    if ctx.add_task is None:
        why = "this agent cannot add tasks to its run"
        return {"ok": False, "refused": {"rule": "no-additions", "message": why, "hint": ""}}
    answer = ctx.add_task(request)
    return await answer if inspect.isawaitable(answer) else answer


class ClusterAgents:
    """The run's agents by kind (the scheduler's factory): remote ones for every kind but
    `LOCAL_KINDS`, which ``local`` (the run's `AgentPool`) gives as they are."""

    def __init__(self, plan: Plan, local: Callable[[str], Agent], cluster: Cluster) -> None:
        self.plan, self.local, self.cluster = plan, local, cluster
        self._agents: dict[str, Agent] = {}

    def __call__(self, kind: str) -> Agent:
        if kind in LOCAL_KINDS:
            return self.local(kind)
        agent = self._agents.get(kind)
        if agent is None:
            agent = self._agents[kind] = RemoteAgent(self.local(kind), kind, self.cluster)
        return agent
