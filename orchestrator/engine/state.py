"""The records the scheduler keeps: settings, spawn requests, and live agent and task state.

Only the scheduler mutates them; views read them through `snapshot`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.engine.collecting import RUN_FULL_COLLECTION
from orchestrator.engine.switching import RUN_SWITCH_INTERVAL
from orchestrator.events import (
    AgentEvent,
    AgentState,
    Blocked,
    Failed,
    Finished,
    Started,
    Usage,
)
from orchestrator.gateway.shared import GatewaySettings
from orchestrator.plan.model import Step, Task
from orchestrator.records.render import brief
from orchestrator.sandbox.confinement import Confinement

Role = Literal["task", "fixer", "build"]
LAST_LINES = 20
"""How many of an agent's last lines its record keeps (``peek``, a blocker's context)."""


@dataclass(frozen=True)
class RunSettings:
    responses: Path
    run_id: str
    mode: Literal["async", "batch"] = "async"
    base_depth: int = 0
    progress_interval: float = 0.05
    progress_cap: int = 50 * 1024 * 1024
    env: Mapping[str, str] | None = None
    """Where child environments are drawn from (default: os.environ); also where the model
    gateway finds the API key and the upstream URL."""
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    keep_open: bool = False
    """`run --keep-open`: the run waits for added tasks once its own are done, until cancelled."""
    resume_hint: str = "orchestrator run PLAN --resume"
    """The command that continues this run, as a person types it (for next steps)."""
    exports: Mapping[str, str] = field(default_factory=dict)
    """Variables every child gets from the run (its quota socket and token, for nested runs)."""
    tail_hint: str = "orchestrator tail"
    """The command that prints a progress file of this run (with ``--responses`` if needed)."""
    sandbox: Confinement | None = None
    """How every agent process of the run is confined; None: not at all (``sandbox: off``,
    or ``best-effort`` on a machine that cannot make one)."""
    switch_interval: float | None = RUN_SWITCH_INTERVAL
    """The interpreter's thread switch interval while the run goes, at most (None: as it is;
    `orchestrator.engine.switching`)."""
    full_collection: float | None = RUN_FULL_COLLECTION
    """Seconds between the full collections of the interpreter's cycle collector while the
    run goes, which allocation no longer triggers (None: the interpreter's own schedule;
    `orchestrator.engine.collecting`)."""


@dataclass(frozen=True, slots=True)
class Spawn:
    """A request to start one agent; queued until the governor admits it."""

    agent_id: str
    task: Task
    attempt: int
    role: Role
    prompt: str
    script: tuple[Step, ...]
    depth: int
    parent: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class AgentRecord:
    """Live state of one agent; mutated by the scheduler only."""

    id: str
    task_id: str
    kind: str
    role: Role
    attempt: int
    depth: int
    parent: str | None
    state: AgentState = "pending"
    pid: int | None = None
    pstart: int | None = None
    """The start time of process ``pid`` (so a recycled pid is never signalled)."""
    started: float | None = None
    ended: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    last_line: str = ""
    lines: list[str] = field(default_factory=list)
    """Its last `LAST_LINES` lines as shown, oldest first (a list: an idle agent holds one
    line, and a deque costs a 64-slot block from its first)."""
    reason: str = ""
    summary: str = ""
    terminal: AgentEvent | None = None
    stop: tuple[AgentState, str] | None = None
    handle: asyncio.Task[None] | None = None
    done: asyncio.Event | None = None
    last_event: float = 0.0
    children: Sequence[str] = ()
    """The agents it spawned (a list from its first: most agents spawn none; `child`)."""
    force: bool = False
    node: str | None = None
    """The cluster node the attempt runs on (None: this machine)."""
    changes: Sequence[str] = ()
    """What its checkout's work changed and where it landed (lines for its progress file)."""

    @classmethod
    def of(cls, spawn: Spawn) -> AgentRecord:
        """The record of the agent ``spawn`` asks for, before it starts."""
        return cls(
            id=spawn.agent_id,
            task_id=spawn.task.id,
            kind=spawn.task.agent,
            role=spawn.role,
            attempt=spawn.attempt,
            depth=spawn.depth,
            parent=spawn.parent,
        )

    def child(self, agent_id: str) -> None:
        """It spawned ``agent_id``."""
        if isinstance(self.children, list):
            self.children.append(agent_id)
        else:
            self.children = [agent_id]

    def heard(self, event: AgentEvent, line: str, now: float) -> None:
        """What the agent just said (``line`` as shown), at monotonic time ``now``."""
        self.last_event = now
        if line:
            self.last_line = line[:200]
            if len(self.lines) >= LAST_LINES:
                del self.lines[0]
            self.lines.append(self.last_line)
        match event:
            case Usage(tokens_in=tin, tokens_out=tout, cost_usd=cost):
                self.tokens_in += tin
                self.tokens_out += tout
                self.cost_usd += cost
            case Started(node=node) if node:
                self.node = node
            case Started(pid=pid) if pid:
                self.pid = pid
            case Blocked() | Failed() | Finished() if self.terminal is None:
                self.terminal = event
            case _:
                pass

    def heard_lines(self, shown: Sequence[str], now: float) -> None:
        """Lines its program printed, as shown: `heard` of an `Output` each, in one step."""
        self.last_event = now
        kept = [line[:200] for line in shown[-LAST_LINES:] if line]
        if kept:
            self.last_line = kept[-1]
            self.lines += kept
            del self.lines[:-LAST_LINES]

    def touch(self) -> None:
        """Its processes wrote something, a whole line or not: the stall clock restarts."""
        self.last_event = time.monotonic()

    def started_fields(self) -> dict[str, object]:
        """What the journal records when the agent starts."""
        return {
            "id": self.id, "task": self.task_id, "kind": self.kind, "role": self.role,
            "parent": self.parent, "attempt": self.attempt, "depth": self.depth,
            "state": "running", "started": self.started,
        }  # fmt: skip

    def ended_fields(self) -> dict[str, object]:
        """What the journal records when the agent ends."""
        return {
            "id": self.id, "state": self.state, "reason": self.reason, "ended": self.ended,
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd, "last_line": self.last_line, "summary": self.summary,
            "node": self.node,
        }  # fmt: skip

    def live_fields(self) -> dict[str, object]:
        """What the journal records now and then while the agent runs."""
        return {
            "id": self.id, "last_line": self.last_line, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "cost_usd": self.cost_usd, "node": self.node,
        }  # fmt: skip

    def status_line(self) -> str:
        """The text after ``status: `` on the last line of the progress file (the reason's
        first line only: `brief`)."""
        duration = (self.ended or 0.0) - (self.started or self.ended or 0.0)
        usage = f"{self.tokens_in} in / {self.tokens_out} out tokens, ${self.cost_usd:.4f}"
        text = f"{self.state} ({duration:.2f}s; {usage})"
        reason = brief(self.reason)
        return text + (f" - {reason}" if reason else "")

    def status_record(self) -> dict[str, object]:
        """The last record of the events sidecar."""
        return {"event": "status", "state": self.state, "reason": self.reason, "t": self.ended}


@dataclass(frozen=True)
class Peek:
    """A non-blocking look at one agent."""

    id: str
    state: AgentState
    last_lines: tuple[str, ...]
    reason: str


@dataclass(slots=True)
class TaskRecord:
    task: Task
    state: AgentState = "pending"
    attempts: list[str] = field(default_factory=list)
    fixers: Sequence[str] = ()
    """Its fixers' agent ids (a list from the first: `fixer`)."""
    reason: str = ""
    final: bool = False
    settled: asyncio.Event | None = None
    depth: int | None = None
    """Its agents' depth; None: the run's base depth (a task added at run time: its adder's + 1)."""
    added: int = 0
    """0 for a task of the plan; the n-th task added while the run went on."""
    added_by: str | None = None
    """The agent that added it (None for a plan task, or a task a person added)."""

    def fixer(self, agent_id: str) -> None:
        """A fixer (``agent_id``) works on a blocker of it."""
        if isinstance(self.fixers, list):
            self.fixers.append(agent_id)
        else:
            self.fixers = [agent_id]
