"""The one seam every kind of agent sits behind, and what the scheduler hands it per attempt."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.events import AgentEvent
from orchestrator.governor import Governor
from orchestrator.plan import Step, Task

ENV_ALLOWLIST: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ",
    "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "NO_COLOR",
)  # fmt: skip
SECRET_NAMES: frozenset[str] = frozenset({"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"})


def child_env(
    *,
    agent_id: str,
    run_id: str,
    depth: int,
    extra: Mapping[str, str] = {},
    pass_env: tuple[str, ...] = (),
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child process: an allowlist, the run's markers, nothing secret.

    The orchestrator's own interpreter directory goes first on PATH, so ``python`` in a plan
    means the Python the orchestrator runs on. Secrets pass only when named in ``pass_env``.
    """
    src = os.environ if source is None else source
    env = {k: src[k] for k in ENV_ALLOWLIST if k in src}
    for name in pass_env:
        if name in src:
            env[name] = src[name]
    env.update(extra)
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", os.defpath)
    if bindir and path.split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + os.pathsep + path
    env["ORCHESTRATOR_AGENT_ID"] = agent_id
    env["ORCHESTRATOR_RUN_ID"] = run_id
    env["ORCHESTRATOR_DEPTH"] = str(depth)
    env["PYTHONUNBUFFERED"] = "1"
    return env


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
    env: dict[str, str]
    emit: Callable[[AgentEvent], None]
    on_process: Callable[[int], None] = lambda pid: None
    grace: float = 5.0
    depth: int = 0
    parent: str | None = None
    context_notes: tuple[str, ...] = field(default_factory=tuple)
    """What dependencies produced: one short line each (summary and progress file)."""
    governor: Governor | None = None
    """The run's governor: agents that spend money ``reserve`` before a request and
    ``settle(reserved, 0)`` after it; the scheduler charges what `Usage` events report."""


class Agent(Protocol):
    """A kind of agent. ``run`` emits events and returns when the attempt is over.

    The attempt's state comes from the first terminal event it emitted (`Finished`,
    `Blocked`, `Failed`); returning without one counts as finished. Cancellation is delivered
    as `asyncio.CancelledError`; the agent cleans up (stops its processes) and lets it pass.
    """

    async def run(self, ctx: AgentContext) -> None: ...
