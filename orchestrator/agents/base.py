"""The one seam every kind of agent sits behind, and what the scheduler hands it per attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.events import AgentEvent, Output
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import Step, Task
from orchestrator.process.lines import Stream
from orchestrator.sandbox.confinement import Confinement


class Budget(Protocol):
    """The run's money as an agent sees it (the engine's governor keeps it)."""

    @property
    def budget_usd(self) -> float | None:
        """The run's budget; None when it has none."""

    @property
    def spent_usd(self) -> float: ...

    @property
    def reserved_usd(self) -> float:
        """Held by requests in flight."""

    @property
    def budget_left(self) -> float:
        """What may still be reserved (infinite without a budget)."""

    @property
    def stopping(self) -> bool:
        """The fence is up: nothing new may start or be sent."""

    def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a request about to be sent; False means do not send it."""

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what the request really cost."""


@dataclass(slots=True)
class AgentContext:
    """Everything one attempt of one agent may use; built by the scheduler, owned by nobody else.

    ``emit`` is synchronous and never blocks: events are buffered and written by the progress
    writer. ``on_process`` registers a child process (its group id equals its pid) so that
    cancel, the journal and the orphan sweep know about it.
    """

    agent_id: str
    task: Task
    attempt: int
    prompt: str
    script: tuple[Step, ...]
    workspace: Path
    responses: Path
    env: Mapping[str, str]
    emit: Callable[[AgentEvent], None]
    on_process: Callable[[int], None] = lambda pid: None
    on_activity: Callable[[], None] = lambda: None
    """The agent's processes wrote something, a whole line or not (progress dots, ``\\r``
    bars): it is not stalled. Pass it to `run_streaming`."""
    grace: float = 5.0
    depth: int = 0
    parent: str | None = None
    context_notes: tuple[str, ...] = field(default_factory=tuple)
    """What dependencies produced: one short line each (summary and progress file)."""
    budget: Budget | None = None
    """The run's budget. Requests through the gateway are reserved and settled there; an
    agent that spends money elsewhere charges it with ``settle(0, cost)``."""
    add_task: (
        Callable[[Mapping[str, object]], dict[str, Any] | Awaitable[dict[str, Any]]] | None
    ) = None
    """Add a task to the run, as this agent (`orchestrator.engine.growth.answer`): the answer,
    a refusal included, or an awaitable of it (on a cluster node); never raises for what was
    asked."""
    model: Access | None = None
    """The model gateway's URL and this attempt's token, for agents that use a model (None:
    the run has no gateway). The agent's program gets these, never the API key."""
    sandbox: Confinement | None = None
    """How this attempt's processes are confined: pass it to `run_streaming` (None: they
    are not)."""
    secrets: Mapping[str, str] = field(default_factory=dict)
    """The task's declared ``secrets`` (name -> value): pass them to `run_streaming`, which
    hands them to the program once, through a pipe; never put them in ``env``."""
    emit_output: Callable[[Stream, Sequence[str]], None] | None = None
    """Lines a program printed, many in one call (`output`); None: ``emit`` takes them, one
    `Output` event each."""

    def output(self, stream: Stream, lines: Sequence[str]) -> None:
        """Lines the agent's program printed on ``stream``, in order: recorded as one `Output`
        event each would be, in one call (a chunk of a flood costs one stamp and one pass)."""
        if self.emit_output is not None:
            self.emit_output(stream, lines)
            return
        for line in lines:
            self.emit(Output(line, stream))


FORCE_STOP = "orchestrator: stop now"
"""The message of a cancellation that allows no grace (``cancel --force``, a second Ctrl-C).
A local agent's group already got SIGKILL; an agent whose processes are elsewhere (a cluster
node) passes it on."""


class Agent(Protocol):
    """A kind of agent. ``run`` emits events and returns when the attempt is over.

    The attempt's state comes from the first terminal event it emitted (`Finished`,
    `Blocked`, `Failed`); returning without one counts as finished. Cancellation is delivered
    as `asyncio.CancelledError` (its message `FORCE_STOP` when no grace is allowed); the agent
    cleans up (stops its processes) and lets it pass.
    """

    @property
    def uses_model(self) -> bool:
        """Whether this kind talks to a model (and so gets the gateway and a token)."""

    @property
    def pass_env(self) -> tuple[str, ...]:
        """Variables its processes need from the orchestrator's environment (an
        ``OPENAI_API_KEY``...); the Anthropic key is never among them (`child_env` drops it)."""

    async def run(self, ctx: AgentContext) -> None: ...
