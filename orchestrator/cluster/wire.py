"""What travels between the driver and a node: plain frozen data, pickled by Ray."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.events import AgentEvent
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import Plan, Step, Task


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """One attempt as a node needs it: never the API key (``env`` comes from `child_env`)."""

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
    plan: Plan
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
