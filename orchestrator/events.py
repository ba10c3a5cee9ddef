"""The vocabulary agents speak: one frozen dataclass per kind of event, and the states they lead to.

Agents only *emit* events; the scheduler alone turns them into state, files and the display.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, get_args

AgentState: TypeAlias = Literal[
    "pending",
    "running",
    "succeeded",
    "failed",
    "blocked",
    "cancelled",
    "timed_out",
    "skipped",
    "escalated",
    "budget_exceeded",
    "lost",
]
TERMINAL_STATES: frozenset[str] = frozenset(get_args(AgentState)) - {"pending", "running"}

FailureKind: TypeAlias = Literal["error", "config", "max_turns", "budget", "provider", "lost"]
"""Why a `Failed` happened: ``config`` (exit 126/127, missing program or key) is never "fixed";
``lost``: the cluster node that ran the attempt died (the attempt ends ``lost``)."""


@dataclass(frozen=True, slots=True)
class Started:
    """The agent is working; ``pid`` when it is a process of its own on this machine, ``node``
    when it runs on a cluster node (the pid is then the node's, never signalled from here)."""

    detail: str = ""
    pid: int | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Text:
    """Words from the agent (model text, a scripted ``say``)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The agent asked for a tool; ``summary`` is a short rendering of its input."""

    name: str
    summary: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool answered, truncated for the progress file."""

    name: str
    summary: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Output:
    """One line a command printed."""

    line: str
    stream: Literal["stdout", "stderr"] = "stdout"


BlockKind: TypeAlias = Literal["agent", "permission"]
"""``agent``: the agent reported a blocker (a fixer may remove it). ``permission``: its program
denied tool calls it asked for; a configuration matter, never sent to a fixer."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """The agent cannot go on without help; ends the attempt as ``blocked``."""

    reason: str
    kind: BlockKind = "agent"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and money spent by one request or one child run (added to the agent's totals)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Finished:
    """The agent says its work is done; ends the attempt as ``succeeded``."""

    summary: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    """The agent could not do its work; ends the attempt as ``failed``."""

    error: str
    kind: FailureKind = "error"


@dataclass(frozen=True, slots=True)
class BuildChecked:
    """A build command's result: its exit code, the tail of its output, failing test ids.

    The build agent emits it before its terminal event; the recovery policy reads it."""

    exit_code: int
    command: str
    tail: str = ""
    failing_tests: tuple[str, ...] = ()

    def summary(self) -> str:
        what = f"`{self.command}` exited {self.exit_code}"
        if self.failing_tests:
            shown = ", ".join(self.failing_tests[:5])
            extra = len(self.failing_tests) - 5
            return f"{what}; failing: {shown}" + (f" and {extra} more" if extra > 0 else "")
        last = next((ln for ln in reversed(self.tail.splitlines()) if ln.strip()), "")
        return f"{what}: {last.strip()[:200]}" if last else what


AgentEvent: TypeAlias = (
    Started
    | Text
    | ToolCall
    | ToolResult
    | Output
    | Blocked
    | Usage
    | Finished
    | Failed
    | BuildChecked
)

_BY_NAME: dict[str, type[Any]] = {
    cls.__name__.lower(): cls
    for cls in (
        Started,
        Text,
        ToolCall,
        ToolResult,
        Output,
        Blocked,
        Usage,
        Finished,
        Failed,
        BuildChecked,
    )
}


_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _BY_NAME.values()
}


def event_to_dict(event: AgentEvent) -> dict[str, Any]:
    """A JSON-ready dict with the event's kind under ``"event"``."""
    data = {f: getattr(event, f) for f in _FIELDS[type(event)]}  # shallow: fields are scalars
    if data.get("node", "") is None:  # only cluster attempts have a node
        del data["node"]
    data["event"] = type(event).__name__.lower()
    return data


def event_from_dict(data: dict[str, Any]) -> AgentEvent:
    """The inverse of `event_to_dict`; unknown keys are ignored."""
    cls = _BY_NAME[str(data["event"])]
    names = {f.name for f in fields(cls)}
    event: AgentEvent = cls(**{k: v for k, v in data.items() if k in names})
    return event
