"""One attempt of one agent: its progress-file header, its timers, and how it ended.

`run_attempt` runs an agent under its wall-clock timeout and its stall watch. Both stop
the agent through the scheduler's ``stop`` (which records why, then cancels the task), so a
timeout, a stall and a user's cancel all end the same way: the agent's processes are stopped
as a group and the attempt returns the recorded state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.agents.base import Agent, AgentContext, Budget
from orchestrator.engine.state import AgentRecord, RunSettings, Spawn
from orchestrator.events import AgentEvent, AgentState, Blocked, Failed, Finished
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import SECRET_NAMES, Limits
from orchestrator.process.env import ChildEnv
from orchestrator.process.lines import one_line
from orchestrator.records.progress import clean
from orchestrator.sandbox.confinement import Confinement

Stop = Callable[[str, AgentState, str], bool]


PROMPT_INDENT = "    "


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
        f"- started: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rec.started))}",
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
    }
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


async def run_attempt(
    rec: AgentRecord,
    ctx: AgentContext,
    agent: Agent,
    *,
    stop: Stop,
    written: Callable[[], Awaitable[None]],
) -> tuple[AgentState, str]:
    """Run ``agent`` to its end, once ``written()`` (the records of its start are on disk:
    recorded before acted on) returned; returns (state, reason).

    A cancellation that ``stop`` asked for (recorded in ``rec.stop``) is absorbed here and
    becomes that state, whether it came before the agent started or while it ran; any other
    cancellation (the run torn down) propagates.
    """
    loop = asyncio.get_running_loop()
    task = ctx.task
    me = asyncio.current_task()
    assert me is not None
    watch = _Watch(rec, stop, loop.time() + task.timeout, task.timeout, task.stall_timeout)
    try:
        await written()
        await agent.run(ctx)
        state, reason = outcome(rec)
    except asyncio.CancelledError:
        if rec.stop is None:
            raise
        while me.cancelling():
            me.uncancel()
        state, reason = rec.stop
    except Exception as exc:  # the one place an agent's crash becomes a value
        state, reason = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        watch.cancel()
    if rec.stop is not None:
        state, reason = rec.stop
    return state, reason


class _Watch:
    """One timer per attempt for both its wall-clock deadline and its stall limit.

    It fires at whichever comes first; a talking agent just moves the next check later.
    """

    __slots__ = ("deadline", "handle", "rec", "stall", "stop", "timeout")

    def __init__(self, rec: AgentRecord, stop: Stop, deadline: float, timeout: float, stall: float):
        self.rec, self.stop, self.deadline = rec, stop, deadline
        self.timeout, self.stall = timeout, stall
        self.handle = asyncio.get_running_loop().call_at(
            min(deadline, self._stall_due()), self.fire
        )

    def _stall_due(self) -> float:
        # rec.last_event is time.monotonic(), the clock asyncio's default loop uses too
        return self.rec.last_event + self.stall

    def fire(self) -> None:
        rec = self.rec
        if rec.state != "running":
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.deadline:
            self.stop(rec.id, "timed_out", f"timed out after {self.timeout:g}s")
        elif now >= self._stall_due():
            self.stop(rec.id, "timed_out", f"stalled: no output for {self.stall:g}s")
        else:
            self.handle = loop.call_at(min(self.deadline, self._stall_due()), self.fire)

    def cancel(self) -> None:
        self.handle.cancel()
