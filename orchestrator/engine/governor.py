"""Limits checked in code at every spawn: concurrency, agents, depth, spawn rate, budget, fence.

Plain arithmetic with an injected clock, so every rule is testable without an event loop.
The scheduler asks before it starts any agent (tasks, retries and fixers alike) and tells
the governor when one starts and ends; nothing else starts agents.

Depth: the plan's task agents run at the run's base depth (0 at the top, or the
``ORCHESTRATOR_DEPTH`` an enclosing agent gave us); a fixer runs one deeper than what it
fixes. An agent deeper than ``max_depth`` is never started.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.gateway.ledger import Ledger
from orchestrator.plan.model import Limits


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a spawn was refused; ``limit`` names the rule (for events and the report)."""

    limit: str
    reason: str


class Governor:
    """The run's limits and the counters they are checked against."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_charge: Callable[[float], None] | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._on_charge = on_charge
        """Told of every cost charged here (a nested run forwards them to its parent)."""
        self.running = 0
        self.started = 0
        self.lent = 0
        """Agents lent to nested runs (counted in ``started`` until they are given back)."""
        self.peak_running = 0
        self.fence: str | None = None
        self.ledger = Ledger(limits.budget_usd)
        """The run's money, shared with the model gateway's thread."""
        self._burst = float(max(limits.max_concurrency, limits.spawn_rate, 1.0))
        self._tokens = self._burst
        self._refilled = clock()
        self._adds = self._burst
        """The bucket of task additions (refilled at ``spawn_rate`` too, see `addition_denial`)."""
        self._adds_refilled = self._refilled

    # --- permanent refusals ---------------------------------------------------------------

    def denial(self, *, depth: int) -> Denial | None:
        """A refusal that waiting cannot cure, or None."""
        lim = self.limits
        if self.fence is not None:
            return Denial("fence", f"the run is stopping ({self.fence}); nothing new starts")
        if self.started >= lim.max_agents:
            return Denial("max_agents", f"the run has started max_agents={lim.max_agents} agents")
        if depth > lim.max_depth:
            return Denial("max_depth", f"depth {depth} is past max_depth={lim.max_depth}")
        if lim.budget_usd is not None and self.spent_usd >= lim.budget_usd:
            return Denial("budget_usd", f"the budget of ${lim.budget_usd:.2f} is spent")
        return None

    def addition_denial(self, *, depth: int, unstarted: int) -> Denial | None:
        """Whether a task may be added now, at ``depth``, while ``unstarted`` tasks wait to start.

        Every limit of a spawn, with the tasks not yet started counted as started (an
        addition that could never start is refused now, not skipped later), and additions
        at most ``spawn_rate`` per second (a burst of one second's worth)."""
        denial = self.denial(depth=depth)
        if denial is not None:
            return denial
        lim = self.limits
        if self.started + unstarted >= lim.max_agents:
            return Denial("max_agents", f"the run has started or holds max_agents="
                          f"{lim.max_agents} agents ({self.started} started, {unstarted} "
                          "waiting)")  # fmt: skip
        now = self.clock()
        self._adds = min(self._burst, self._adds + (now - self._adds_refilled) * lim.spawn_rate)
        self._adds_refilled = now
        if self._adds < 1.0:
            wait = (1.0 - self._adds) / lim.spawn_rate
            return Denial("spawn_rate", f"tasks are added faster than spawn_rate="
                          f"{lim.spawn_rate:g}/s; try again in {wait:.2f}s")  # fmt: skip
        self._adds -= 1.0
        return None

    @property
    def agents_left(self) -> int:
        return max(self.limits.max_agents - self.started, 0)

    # --- waiting refusals -----------------------------------------------------------------

    def delay(self) -> float:
        """0 when an agent may start now; seconds until a spawn token; inf while no slot is free."""
        if self.running >= self.limits.max_concurrency:
            return math.inf
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.limits.spawn_rate

    def spawned(self, *, counts: bool = True) -> None:
        """Count one start; the caller has checked `denial` and `delay` just before.

        ``counts=False`` is for build checks: they take a slot but not one of max_agents.
        """
        self._refill()
        self._tokens -= 1.0
        self.running += 1
        self.started += counts
        self.peak_running = max(self.peak_running, self.running)

    def released(self) -> None:
        self.running -= 1

    def lend(self, wanted: int) -> int:
        """Lend up to ``wanted`` agents to a nested run: they count as started here until
        given back. None while the fence is up."""
        granted = 0 if self.fence is not None else min(max(wanted, 0), self.agents_left)
        self.started += granted
        self.lent += granted
        return granted

    def take_back(self, unused: int) -> None:
        """A nested run gives back agents it did not start."""
        back = min(max(unused, 0), self.lent)
        self.lent -= back
        self.started -= back

    def raise_fence(self, reason: str) -> None:
        """From now on nothing new starts; the first reason is kept."""
        if self.fence is None:
            self.fence = reason

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(
            self._burst, self._tokens + (now - self._refilled) * self.limits.spawn_rate
        )
        self._refilled = now

    # --- budget (the ledger's: reserve before a request, settle after) ---------------------

    @property
    def budget_usd(self) -> float | None:
        return self.limits.budget_usd

    @property
    def spent_usd(self) -> float:
        return self.ledger.spent_usd

    @property
    def reserved_usd(self) -> float:
        return self.ledger.reserved_usd

    @property
    def stopping(self) -> bool:
        return self.fence is not None

    @property
    def budget_left(self) -> float:
        return self.ledger.budget_left

    def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a request about to be sent; False means do not send it."""
        if self.limits.budget_usd is None:
            return True
        if self.fence is not None:
            return False
        return self.ledger.reserve(amount)

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what the request really cost."""
        self.ledger.settle(reserved, actual)

    def charge(self, actual: float) -> None:
        """Count money spent without a reservation (a child CLI reporting its own cost, a
        nested run forwarding its costs); a nested run forwards it to its parent."""
        self.ledger.settle(0.0, actual)
        if self._on_charge is not None and actual > 0:
            self._on_charge(actual)

    @property
    def budget_spent(self) -> bool:
        return self.ledger.budget_spent
