"""One attempt of one agent: its progress-file header, its timers, and how it ended.

`Watch` runs around an agent's run: its wall-clock timeout and its stall watch. Both stop
the agent through the scheduler's ``stop`` (which records why, then cancels the task), so a
timeout, a stall and a user's cancel all end the same way: the agent's processes are stopped
as a group and the attempt ends in the recorded state.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from orchestrator.agents.base import AgentContext, Budget
from orchestrator.engine.state import AgentRecord, RunSettings, Spawn
from orchestrator.events import AgentEvent, AgentState, Blocked, Failed, Finished
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import SECRET_NAMES, Limits, Task
from orchestrator.process.env import ChildEnv
from orchestrator.process.lines import Stream, one_line
from orchestrator.records.render import clean
from orchestrator.sandbox.confinement import Confinement

Stop = Callable[[str, AgentState, str], bool]
NO_SECRETS: Mapping[str, str] = MappingProxyType({})
"""What an attempt whose task declares no ``secrets:`` gets (shared, never written to)."""


class Host(Protocol):
    """What an attempt's callbacks reach in the run (the scheduler)."""

    def agent_event(self, rec: AgentRecord, event: AgentEvent) -> None: ...

    def agent_output(self, rec: AgentRecord, stream: Stream, lines: Sequence[str]) -> None: ...

    def agent_process(self, rec: AgentRecord, pid: int) -> None: ...

    def agent_adds(self, rec: AgentRecord, request: Mapping[str, object]) -> dict[str, Any]: ...


class Hooks:
    """One attempt's callbacks (``emit``, ``on_process``, ``add_task``) as methods of one
    small object: an idle agent holds it and a bound method per callback, not a partial, its
    argument tuple and a bound method of the run each (about 0.5 KiB at 10,000 agents each)."""

    __slots__ = ("host", "rec")

    def __init__(self, host: Host, rec: AgentRecord) -> None:
        self.host, self.rec = host, rec

    def emit(self, event: AgentEvent) -> None:
        self.host.agent_event(self.rec, event)

    def output(self, stream: Stream, lines: Sequence[str]) -> None:
        self.host.agent_output(self.rec, stream, lines)

    def on_process(self, pid: int) -> None:
        self.host.agent_process(self.rec, pid)

    def add_task(self, request: Mapping[str, object]) -> dict[str, Any]:
        return self.host.agent_adds(self.rec, request)


PROMPT_INDENT = "    "


@functools.lru_cache(maxsize=4)
def _utc(second: int) -> str:
    """A second as a header gives it (the agents started in one second share one string)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def header(rec: AgentRecord, spawn: Spawn) -> str:
    """The top of ``<agent>.md``: who, what, when, the prompt and the context given.

    The prompt may quote a blocker, a build's output or a dependency's words: it is shown as
    an indented block (Markdown's code block) with escapes and control characters removed, so
    no line of it can start a heading, a ``status:`` line or anything else; each context
    note stays on its one line."""
    deps = ", ".join(spawn.task.depends_on) if rec.role == "task" else ""
    lines = [
        f"# {rec.id}",
        "",
        f"- task: {rec.task_id}",
        f"- kind: {rec.kind}",
        f"- role: {rec.role}",
        f"- attempt: {rec.attempt}",
        f"- depends on: {deps or '(none)'}",
        f"- parent: {rec.parent + '.md' if rec.parent else '-'}",
        f"- started: {_utc(int(time.time() if rec.started is None else rec.started))}",
        "",
        "## Prompt",
        "",
    ]
    if spawn.prompt:
        text = clean(spawn.prompt.rstrip("\n"))
        lines.extend((PROMPT_INDENT + line).rstrip() for line in text.split("\n"))
    elif spawn.script:
        lines.append(f"(scripted: {len(spawn.script)} steps)")
    elif spawn.task.command:
        lines.append(PROMPT_INDENT + one_line("$ " + " ".join(spawn.task.command)))
    if spawn.notes:
        lines += ["", "## Context", "", *(f"- {one_line(n)}" for n in spawn.notes)]
    lines += ["", "## Progress", "", ""]
    return "\n".join(lines)


def context(
    rec: AgentRecord,
    spawn: Spawn,
    *,
    workspace: Path,
    settings: RunSettings,
    env: Mapping[str, str],
    limits: Limits,
    emit: Callable[[AgentEvent], None],
    on_process: Callable[[int], None],
    budget: Budget,
    emit_output: Callable[[Stream, Sequence[str]], None] | None = None,
    model: Access | None = None,
    pass_env: tuple[str, ...] = (),
    add_task: Callable[[Mapping[str, object]], dict[str, Any]] | None = None,
) -> AgentContext:
    """What the agent of this attempt gets: its task, prompt, script, environment, callbacks.

    Children see ``ORCHESTRATOR_DEPTH`` one deeper than the agent, the run's max_depth (the
    smallest on the chain of nested runs) and the run's quota socket (`settings.exports`), so an
    orchestrator started inside an agent refuses to go past the depth and draws its agents
    and budget from this run. No child gets the API
    key: agents that use a model get ``model``, the gateway's URL and their own token.
    """
    task = spawn.task
    secrets = {  # the orchestrator's values; a model API's key never (the loader refuses it too)
        name: env[name] for name in task.secrets if name in env and name not in SECRET_NAMES
    } or NO_SECRETS
    env = ChildEnv(  # built when a process is started: an idle agent holds no copy
        agent_id=rec.id,
        run_id=settings.run_id,
        depth=rec.depth + 1,
        task_env=task.env,
        pass_env=task.pass_env + pass_env,
        source=env,
        max_depth=limits.max_depth,
        exports=settings.exports,
    )
    return AgentContext(
        agent_id=rec.id,
        task=task,
        attempt=spawn.attempt,
        prompt=spawn.prompt,
        script=spawn.script,
        workspace=workspace,
        responses=settings.responses,
        env=env,
        emit=emit,
        emit_output=emit_output,
        on_process=on_process,
        on_activity=rec.touch,
        grace=limits.grace,
        depth=rec.depth,
        parent=rec.parent,
        context_notes=spawn.notes,
        budget=budget,
        model=model,
        sandbox=_confinement(settings, model),
        secrets=secrets,
        add_task=add_task,
    )


def _confinement(settings: RunSettings, model: Access | None) -> Confinement | None:
    """The run's sandbox for one attempt: with ``network: gateway``, reaching the gateway
    (its port on the sandbox's own loopback) when the attempt was given a token."""
    if settings.sandbox is None:
        return None
    return settings.sandbox.through_gateway(model.url if model is not None else None)


def outcome(rec: AgentRecord) -> tuple[AgentState, str]:
    """The state an attempt ends in, from the first terminal event it emitted."""
    match rec.terminal:
        case Blocked(reason=reason):
            return "blocked", reason
        case Failed(error=error, kind="budget"):
            return "budget_exceeded", error
        case Failed(error=error, kind="lost"):
            return "lost", error
        case Failed(error=error):
            return "failed", error
        case Finished(summary=summary):
            return "succeeded", summary
        case _:
            return "succeeded", ""


GRAIN = 0.01
"""Seconds a watch's timer may fire late (`Clock`); never early."""
NO_SLOT = -1
"""No bucket: a time that never comes (`Clock.add`), or a watch that has left."""
Check = Callable[[], None]
"""A watch's check, called once its time has come (`Watch` itself)."""


class Clock:
    """The timers of a run's watches, in buckets of `GRAIN` seconds: one loop timer for each
    bucket that holds a watch, not one for each watch. Each ``TimerHandle`` is pushed on the
    loop's heap, whose comparisons run in Python: with ten thousand agents waiting, their
    watches' handles were most of that heap.

    Due watches are called one by one (each its own ``call_soon``), so one that raises is
    reported as a timer's exception would be and the others still run. A bucket left empty
    by `remove` has its timer cancelled."""

    __slots__ = ("_buckets", "context")

    def __init__(self, context: contextvars.Context | None = None) -> None:
        self._buckets: dict[int, tuple[asyncio.TimerHandle, dict[Check, None]]] = {}
        self.context = context
        """Where its timers and the watches' checks run (None: a copy of the current
        context for each)."""

    def add(self, when: float, watch: Check) -> int:
        """Call ``watch`` at loop time ``when`` or up to `GRAIN` later; its bucket (for
        `remove`). A time that is not finite is never due."""
        if not math.isfinite(when):
            return NO_SLOT
        slot = math.ceil(when / GRAIN)
        held = self._buckets.get(slot)
        if held is None:
            loop = asyncio.get_running_loop()
            timer = loop.call_at(slot * GRAIN, self._due, slot, context=self.context)
            held = self._buckets[slot] = (timer, {})
        held[1][watch] = None
        return slot

    def remove(self, slot: int, watch: Check) -> None:
        held = self._buckets.get(slot)
        if held is None:
            return  # due already
        timer, watches = held
        watches.pop(watch, None)
        if not watches:
            timer.cancel()
            del self._buckets[slot]

    def __len__(self) -> int:
        """Loop timers it holds."""
        return len(self._buckets)

    def _due(self, slot: int) -> None:
        held = self._buckets.pop(slot, None)
        if held is not None:
            loop = asyncio.get_running_loop()
            for watch in held[1]:
                loop.call_soon(watch, context=self.context)


class Watch:
    """One attempt's watch: a context manager around the agent's run, and one timer (in the
    run's `Clock`) for both its wall-clock deadline and its stall limit.

    The timer fires at whichever comes first; a talking agent just moves the next check later;
    both stop the agent through ``stop``. On leaving, the attempt's (state, reason) is in
    ``ended``: from its terminal event, or a crash (the one place an agent's crash becomes a
    value). A cancellation that ``stop`` asked for (recorded in ``rec.stop``) is absorbed and
    becomes that state, whether it came before the agent started or while it ran; any other
    (the run torn down) propagates. A context manager, not a coroutine around the agent's: an
    idle agent holds no frame for it.
    """

    __slots__ = ("clock", "deadline", "ended", "rec", "slot", "stall", "stop", "timeout")

    def __init__(self, rec: AgentRecord, task: Task, stop: Stop, clock: Clock) -> None:
        loop = asyncio.get_running_loop()
        self.rec, self.stop, self.deadline = rec, stop, loop.time() + task.timeout
        self.timeout, self.stall = task.timeout, task.stall_timeout
        self.ended: tuple[AgentState, str] = ("succeeded", "")
        self.clock = clock
        self.slot = clock.add(min(self.deadline, self._stall_due()), self)
        """Its timer's bucket in ``clock``; `NO_SLOT` once it has left (a check already due
        then does nothing)."""

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        self.clock.remove(self.slot, self)
        self.slot = NO_SLOT
        rec = self.rec
        if exc is None:
            self.ended = outcome(rec)
        elif isinstance(exc, asyncio.CancelledError):
            if rec.stop is None:
                return False
            me = asyncio.current_task()
            while me is not None and me.cancelling():
                me.uncancel()
        elif isinstance(exc, Exception):
            self.ended = "failed", f"{type(exc).__name__}: {exc}"
        else:
            return False
        if rec.stop is not None:
            self.ended = rec.stop
        return True

    def _stall_due(self) -> float:
        # rec.last_event is time.monotonic(), the clock asyncio's default loop uses too
        return self.rec.last_event + self.stall

    def __call__(self) -> None:
        """Its timer fired."""
        rec = self.rec
        if self.slot == NO_SLOT or rec.state != "running":
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.deadline:
            self.stop(rec.id, "timed_out", f"timed out after {self.timeout:g}s")
        elif now >= self._stall_due():
            self.stop(rec.id, "timed_out", f"stalled: no output for {self.stall:g}s")
        else:
            self.slot = self.clock.add(min(self.deadline, self._stall_due()), self)
