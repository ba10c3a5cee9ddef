"""What the world outside asks of a live run besides peeks and waits: stop an agent after its
turn, count a nested run's costs, a signal. `Run` inherits these; each goes through the
scheduler's own transitions (`cancel`, `cancel_all`, the budget fence)."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.engine.governor import Governor
    from orchestrator.engine.models import ModelTraffic
    from orchestrator.engine.state import AgentRecord


class RunRequests:
    """Requests from other processes (the control socket, nested runs) and from signals."""

    agents: dict[str, AgentRecord]
    governor: Governor
    models: ModelTraffic
    _interrupted: int | None

    def cancel_after_turn(self, agent_id: str) -> list[str]:
        """Let the agent's model request in flight finish, then stop it at its next request
        (agents that talk to no model stop at once)."""
        self._check_known(agent_id)
        rec = self.agents.get(agent_id)
        if rec is not None and rec.state == "running" and self.models.after_turn(agent_id):
            return [agent_id]
        return self.cancel(agent_id)

    def charge(self, usd: float) -> None:
        """A nested run one of our agents started spent ``usd``: it counts against our budget
        (and, through ``upstream``, our parent's)."""
        self.governor.charge(usd)
        if self.governor.budget_spent:
            self._budget_gone()

    def interrupt(self, signum: int) -> None:
        """A signal arrived: first time stop gracefully, second time kill at once."""
        force = self._interrupted is not None
        self._interrupted = signum
        self.cancel_all(reason=f"interrupted by {signal.Signals(signum).name}", force=force)

    # --- what the scheduler provides --------------------------------------------------------

    def _check_known(self, agent_id: str) -> None:
        raise NotImplementedError  # pragma: no cover - `Run` (through RunQueries) has it

    def cancel(self, agent_id: str, *, tree: bool = False, force: bool = False) -> list[str]:
        raise NotImplementedError  # pragma: no cover - `Run` has it

    def cancel_all(self, *, reason: str = "cancel --all", force: bool = False) -> None:
        raise NotImplementedError  # pragma: no cover - `Run` has it

    def _budget_gone(self) -> None:
        raise NotImplementedError  # pragma: no cover - `Run` has it
