"""Limits across nested runs: an `orchestrator run` started by an agent draws from its parent.

Every run exports its control socket and a token to its agents (`ORCHESTRATOR_QUOTA`,
`ORCHESTRATOR_QUOTA_TOKEN`). A run that finds them in its own environment is nested: before it
starts anything it asks that parent for agents (``lease``), runs with at most what it was
granted as its ``max_agents`` (and at most the parent's budget left as its ``budget_usd``),
forwards every cost it is charged (``charge``) so the parent's budget counts the whole tree,
and gives back what it did not use when it ends (``release``). Its own agents get its own
socket, so each level lends from what it was lent: one ceiling for the whole tree, enforced by
each parent's governor.

Decision: an allotment up front, not one request per agent. A nested run then enforces its
ceiling locally and its recovery policy sees the true agents left (a fixer is never planned
that the parent would refuse later), at the price that a nested run holds the slots it asked
for (its own ``max_agents``, or what its plan could use, whichever is smaller) until it ends.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.control.channel import request
from orchestrator.errors import EnvironmentProblem, RunError
from orchestrator.plan.model import Plan
from orchestrator.process.env import QUOTA_VAR, TOKEN_VAR

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run

OPS = frozenset({"lease", "release", "charge"})
FORWARD_EVERY = 0.05
"""Seconds between forwards of the costs charged meanwhile (batched: one request per tick)."""
PARENT_TIMEOUT = 5.0


def exports(socket_path: Path) -> dict[str, str]:
    """What a run exports to its agents: its socket (absolute) and a fresh token."""
    return {QUOTA_VAR: str(socket_path.resolve()), TOKEN_VAR: secrets.token_hex(16)}


# --- the parent's side ------------------------------------------------------------------------


def handle(run: Run, req: dict[str, Any], *, token: str) -> dict[str, Any] | None:
    """Answer a nested run's ``lease``, ``release`` or ``charge`` against ``run``'s limits;
    None for any other op (`orchestrator.control.channel.handle` answers those)."""
    if req.get("op") not in OPS:
        return None
    if not token or req.get("token") != token:
        return {"ok": False, "code": 2, "error": "error: not an agent of this run"}
    op = req.get("op")
    amount = req.get("agents") if op in ("lease", "release") else req.get("usd")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
        return {"ok": False, "code": 2, "error": f"error: bad {op} request"}
    if op == "lease":
        granted = run.governor.lend(int(amount))
        left = run.governor.budget_left
        return {
            "ok": True,
            "granted": granted,
            "budget_left": left if math.isfinite(left) else None,
            "max_agents": run.plan.limits.max_agents,
        }
    if op == "release":
        run.governor.take_back(int(amount))
        return {"ok": True}
    run.charge(float(amount))
    return {"ok": True}


# --- the nested run's side --------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    granted: int
    budget_left: float | None
    parent_max_agents: int


@dataclass
class Parent:
    """The run that started this one (through one of its agents), reached by its socket."""

    socket: Path
    token: str
    _owed: float = 0.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Parent | None:
        path, token = env.get(QUOTA_VAR, ""), env.get(TOKEN_VAR, "")
        return cls(Path(path), token) if path and token else None

    def _ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = request(self.socket, {**payload, "token": self.token}, timeout=PARENT_TIMEOUT)
        except RunError as exc:
            answer = {"error": str(exc)}
        if answer is None or not answer.get("ok"):
            why = answer.get("error") if answer else "it does not answer"
            raise EnvironmentProblem(
                f"error: the run that started this one ({self.socket}) refused: {why}; not "
                "starting (hint: a nested run draws its agents from the run that started it)"
            )
        return answer

    def lease(self, agents: int) -> Lease:
        """Ask for up to ``agents`` agents (blocking: call it through a thread)."""
        answer = self._ask({"op": "lease", "agents": agents})
        left = answer.get("budget_left")
        return Lease(
            int(answer.get("granted") or 0),
            float(left) if isinstance(left, int | float) else None,
            int(answer.get("max_agents") or 0),
        )

    def release(self, agents: int) -> None:
        """Give back agents this run did not start (blocking); a parent gone meanwhile is fine."""
        if agents > 0:
            try:
                self._ask({"op": "release", "agents": agents})
            except EnvironmentProblem:
                pass

    def charge(self, usd: float) -> None:
        """Owe the parent ``usd`` (forwarded by `run_forwarder`); never blocks."""
        if usd > 0:
            self._owed += usd
            self._wake.set()

    async def run_forwarder(self) -> None:
        """Forward what is owed, batched, until cancelled (then `flush` what is left)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FORWARD_EVERY)

    async def flush(self) -> None:
        """Forward what is owed now (bounded by the parent's answer time)."""
        owed, self._owed = self._owed, 0.0
        if owed > 0:
            try:
                await asyncio.to_thread(self._ask, {"op": "charge", "usd": owed})
            except EnvironmentProblem:
                pass  # the parent is gone or stopping: it can no longer be over-spent


def inherit_depth(plan: Plan, env: Mapping[str, str]) -> Plan:
    """The plan with the smallest ``max_depth`` on the chain of nested runs that led here."""
    try:
        ceiling = int(env.get("ORCHESTRATOR_MAX_DEPTH", ""))
    except ValueError:
        return plan
    if ceiling >= plan.limits.max_depth:
        return plan
    return replace(plan, limits=replace(plan.limits, max_depth=max(ceiling, 0)))


async def lease_plan(parent: Parent, plan: Plan) -> tuple[Plan, int]:
    """A nested run's allotment from its parent: the plan with ``max_agents`` at most what was
    granted and ``budget_usd`` at most the parent's budget left; refused when nothing is."""
    from orchestrator.plan.graph import describe

    lease = await asyncio.to_thread(parent.lease, describe(plan).most_agents)
    if lease.granted <= 0:
        raise EnvironmentProblem(
            "error: the run that started this one has no agents left to lend "
            f"(its max_agents={lease.parent_max_agents} counts every nested run); not starting"
        )
    limits = replace(plan.limits, max_agents=min(plan.limits.max_agents, lease.granted))
    if lease.budget_left is not None:
        own = plan.limits.budget_usd
        budget = lease.budget_left if own is None else min(own, lease.budget_left)
        limits = replace(limits, budget_usd=budget)
    return replace(plan, limits=limits), lease.granted


@dataclass
class Used:
    agents: int = 0
    """Agents the nested run counted (started, or lent on to its own nested runs)."""
