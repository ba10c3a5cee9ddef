"""What travels between the driver and a node: plain frozen data, pickled by Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.events import AgentEvent
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import Step, Task


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """One attempt as a node needs it: never the API key (``env`` comes from `child_env`).
    The run's plan is not in it: its host got it once (`NodeHost.ready`)."""

    agent_id: str
    run_id: str
    kind: str
    task: Task
    attempt: int
    prompt: str
    script: tuple[Step, ...]
    env: dict[str, str]
    grace: float
    depth: int
    parent: str | None
    notes: tuple[str, ...]
    model: Access | None
    base: str
    """The workspace commit the attempt starts from (in the bundle it gets)."""
    prefix: str = ""
    """Where the agent works inside that commit (a workspace below its repository's top)."""


@dataclass(frozen=True, slots=True)
class Change:
    """What an attempt changed in its workspace: commit ``head`` on top of ``base``, as a git
    bundle (``bundle`` empty when nothing changed)."""

    agent_id: str
    base: str
    head: str
    bundle: bytes

    @property
    def empty(self) -> bool:
        return not self.bundle


@dataclass(frozen=True, slots=True)
class Batch:
    """What the attempt said since the last poll; ``active``: its processes wrote something."""

    events: tuple[AgentEvent, ...]
    active: bool
    done: bool
    change: Change | None = None
    """With the last batch: what the attempt changed in its workspace."""
    asks: tuple[tuple[int, dict[str, Any]], ...] = ()
    """Tasks the attempt's processes asked to add (`orchestrator add`, the ``add_task``
    tool), by request number: the driver answers them (`NodeHost.answer`)."""
    error: str = ""
    """With the last batch instead of ``change``: why its change could not be taken."""


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a host found on its node when it started."""

    held: tuple[str, ...]
    """API-key variables in the node's environment (the driver refuses such a node)."""
    sandbox: str
    """How attempts on this node are confined: the sandbox decision's summary line."""
    warnings: tuple[str, ...] = ()
    """What the node's confinement lacks (no cgroup limits, no sandbox at best-effort)."""
    refused: str = ""
    """Why this node cannot confine agents as the run requires (it gets no attempts)."""
