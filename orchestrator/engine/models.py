"""The run's side of the model gateway: started with the run, one grant per attempt.

When a plan has agents that talk to a model (``agent.uses_model``) and the orchestrator holds
a credential (``ANTHROPIC_API_KEY`` or ``ANTHROPIC_AUTH_TOKEN``; ``OPENAI_API_KEY``), the run
starts one `orchestrator.gateway.service.Gateway` and every such attempt gets the gateway's
URL and a token of its own instead of the key (`grant`), refused once the attempt has ended
(`release`). Cancelling an agent refuses its token at once, ``cancel --all`` and the budget
fence refuse every token, ``cancel --after-turn`` the agent's next request.

Without a credential there is no gateway (nothing to protect): a claude-code child then uses
its own login, and its cost is what it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

from orchestrator.agents.base import Agent
from orchestrator.engine.state import AgentRecord, RunSettings
from orchestrator.events import AgentEvent, AgentState
from orchestrator.gateway.grants import Access, Grant
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.pricing import PriceTable
from orchestrator.gateway.service import Gateway, open_gateway
from orchestrator.gateway.shared import Upstream
from orchestrator.plan.model import SECRET_NAMES, Plan, Task
from orchestrator.sandbox.scratch import own_dir

AGENTS_PER_SLOT = 4
"""Upstream requests in flight per concurrent agent at most (Claude Code overlaps a few)."""


class ModelTraffic:
    """The gateway of one run (or none) and the grants of its attempts.

    It is also the gateway's `orchestrator.gateway.shared.Hooks`: an agent whose turn is
    over is stopped through ``stop``, a failure that stopped the model traffic is escalated
    through ``escalate`` (once).
    """

    def __init__(
        self,
        plan: Plan,
        settings: RunSettings,
        ledger: Ledger,
        stop: Callable[[str, AgentState, str], bool],
        escalate: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.ledger = ledger
        self._stop = stop
        self._escalate = escalate
        self.gateway: Gateway | None = None
        self.last: Gateway | None = None
        """The run's gateway, kept after it stopped for its figures."""
        self._grants: dict[str, Grant] = {}

    @contextlib.asynccontextmanager
    async def open(
        self, env: Mapping[str, str], agents: Callable[[str], Agent]
    ) -> AsyncIterator[None]:
        """Run the gateway for the block when a kind of agent in the plan uses a model and
        ``env`` holds a credential."""
        kinds = {t.agent for t in self.plan.tasks} | {self.plan.fixer.agent or "scripted"}
        needed = any(agents(kind).uses_model for kind in kinds) or any(
            wants_model(agents(t.agent), t) for t in self.plan.tasks
        )
        upstream = Upstream.from_env(env) if needed else None
        openai = Upstream.openai_from_env(env) if needed else None
        if upstream is None and openai is None:
            yield
            return
        settings = self.settings.gateway
        sandbox = self.settings.sandbox
        if sandbox is not None and sandbox.network == "gateway" and settings.unix is None:
            # Sandboxes without network reach it on a socket in the run's scratch directory.
            await asyncio.to_thread(own_dir, sandbox.scratch)
            settings = dataclasses.replace(settings, unix=str(sandbox.gateway_socket))
        ceiling = settings.ceiling or AGENTS_PER_SLOT * self.plan.limits.max_concurrency
        async with open_gateway(
            upstream=upstream, openai=openai, ledger=self.ledger,
            prices=PriceTable(self.plan.prices), hooks=self, settings=settings, ceiling=ceiling,
        ) as gateway:  # fmt: skip
            self.gateway = self.last = gateway
            try:
                yield
            finally:
                self.gateway = None

    def grant(
        self, rec: AgentRecord, task: Task, emit: Callable[[AgentEvent], None]
    ) -> Access | None:
        """A token for this attempt of ``rec`` (None without a gateway); the gateway's events
        about its requests reach ``emit`` while it runs."""
        if self.gateway is None:
            return None

        def deliver(event: AgentEvent) -> None:
            if rec.state == "running":  # a late post after the attempt ended is dropped
                emit(event)

        account = None
        if task.budget_usd is not None:  # a task's attempts share its budget; a fixer has its own
            account = f"task:{task.id}" if rec.role == "task" else f"agent:{rec.id}"
            self.ledger.open_account(account, task.budget_usd)
        grant = self.gateway.open_grant(
            rec.id, deadline=time.monotonic() + task.timeout, emit=deliver, account=account
        )
        self._grants[rec.id] = grant
        return self.gateway.access(grant)

    async def release(self, agent_id: str) -> None:
        """The attempt ended: its token is refused from now on; its usage is in."""
        grant = self._grants.pop(agent_id, None)
        if grant is not None and self.gateway is not None:
            await self.gateway.close_grant(grant)

    def release_nowait(self, agent_id: str) -> None:
        """`release` without waiting for requests in flight (the run is being torn down)."""
        grant = self._grants.pop(agent_id, None)
        if grant is not None:
            grant.closed = True

    def refuse(self, agent_ids: Iterable[str], reason: str) -> None:
        if self.gateway is not None:
            for agent_id in agent_ids:
                self.gateway.refuse(agent_id, reason)

    def after_turn(self, agent_id: str) -> bool:
        """Whether the agent talks through the gateway (so its turn can end there)."""
        return self.gateway is not None and self.gateway.after_turn(agent_id)

    def fence(self, reason: str) -> None:
        if self.gateway is not None:
            self.gateway.fence(reason)

    # --- the gateway's hooks (on the scheduler's loop) -------------------------------------

    def on_after_turn(self, agent_id: str) -> None:
        self._stop(agent_id, "cancelled", "cancelled after its turn (cancel --after-turn)")

    def on_stopped(self, reason: str) -> None:
        self._escalate(reason)


def wants_model(agent: Agent, task: Task) -> bool:
    """Whether an attempt gets a gateway token: its kind talks to a model, or its task asks for
    the key by name (``pass_env: [ANTHROPIC_API_KEY]``, say a command agent that starts a
    nested orchestrator): it gets a metered token in its place, never the key."""
    return agent.uses_model or any(name in SECRET_NAMES for name in task.pass_env)
