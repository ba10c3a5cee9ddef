"""The preset agent: a CLI coding agent started from its preset, its output read into events.

What a preset runs (its argv template, the flags and environment derived from the task and the
run's limits) is `orchestrator.agents.presets.table`'s; where its program is,
`orchestrator.agents.presets.program`'s.

The process layer is the command agent's: `orchestrator.process.spawn.run_streaming` runs the
child in a process group of its own and stops it with SIGTERM, grace, SIGKILL; exit codes mean what
`orchestrator.agents.command.outcome` says. Claude Code runs each Bash tool call in a session
of its own, out of reach of a signal to the group, so once the child has ended (or was
cancelled) `procs.sweep_run` for this agent kills whatever still carries its markers.
The ``lines`` parser is the command agent's reading of output (``Output`` lines, a
``BLOCKED:`` line, the exit code); ``stream-json`` is `orchestrator.agents.presets.streamjson`.

Money: with a model gateway in the run (``ctx.model``) the child talks to it with its own
token and every request is reserved, metered and charged there; what the child says it cost
is only shown. Without one (no key in the orchestrator's environment: the child uses its own
login) the cost its result reports is charged to the run's budget here.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.agents.base import AgentContext
from orchestrator.agents.output import blocked_reason, outcome
from orchestrator.agents.presets.program import bundled_claude as bundled_claude
from orchestrator.agents.presets.program import locate_program
from orchestrator.agents.presets.program import missing_preset_program as missing_preset_program
from orchestrator.agents.presets.streamjson import StreamJsonParser
from orchestrator.agents.presets.table import (
    BLOCKED_NOTE,
    ParserName,
    Preset,
    claude_code_env,
    claude_code_flags,
    floor_cents,
    gateway_env,
    preset_argv,
    preset_for,
    preset_pass_env,
)
from orchestrator.events import (
    AgentEvent,
    Blocked,
    Failed,
    FailureKind,
    Output,
    Started,
    Usage,
)
from orchestrator.plan.model import Plan, Task
from orchestrator.process.lines import DEFAULT_MAX_LINE as MAX_LINE
from orchestrator.process.lines import Stream
from orchestrator.process.orphans import sweep_run
from orchestrator.process.procfs import AGENT_ID_VAR, RUN_ID_VAR
from orchestrator.process.spawn import run_streaming

STREAM_JSON_MAX_LINE = 8 * 1024 * 1024
"""One stream-json line holds a whole tool result (a file read, a command's output)."""
MIN_BUDGET_USD = 0.0001
"""Less than this left of the run's budget: a claude-code child is not started."""


# --- reading the child --------------------------------------------------------------------------


class OutputParser(Protocol):
    """Turns a child's output lines, then its exit code, into agent events."""

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]: ...

    def finish(self, code: int) -> list[AgentEvent]: ...


@dataclass(slots=True)
class LinesParser:
    """The command agent's reading: every line an `Output`, a ``BLOCKED:`` line a blocker,
    the exit code the rest."""

    blocked: bool = False
    last_stdout: str = ""

    def feed(self, stream: Stream, line: str) -> list[AgentEvent]:
        events: list[AgentEvent] = [Output(line, stream)]
        if not self.blocked:
            reason = blocked_reason(line)
            if reason is not None:
                self.blocked = True
                events.append(Blocked(reason))
        if stream == "stdout" and line.strip():
            self.last_stdout = line
        return events

    def finish(self, code: int) -> list[AgentEvent]:
        return [] if self.blocked else [outcome(code, self.last_stdout)]


def make_parser(name: ParserName, *, metered: bool) -> OutputParser:
    """``metered``: the gateway meters the child's requests, so its own cost is only shown."""
    if name == "stream-json":
        return StreamJsonParser(metered=metered)
    return LinesParser()


# --- the agent ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PresetAgent:
    """Runs one preset for every task of that kind in a run (no per-attempt state)."""

    kind: str
    plan: Plan
    drain: float = 0.2

    @property
    def uses_model(self) -> bool:
        return preset_for(self.kind).uses_model

    @property
    def pass_env(self) -> tuple[str, ...]:
        return preset_pass_env(self.kind)

    async def run(self, ctx: AgentContext) -> None:
        preset = preset_for(self.kind, self.plan.presets)
        task = ctx.task
        emit = ctx.emit  # the scheduler masks the key in every event
        env = {**dict(preset.env), **ctx.env}
        if ctx.model is not None:
            env = gateway_env(env, preset, ctx.model, timeout=task.timeout)
        flags: list[str] = []
        if preset.flags == "claude-code":
            levels_left = self.plan.limits.max_depth - ctx.depth
            budget_left = ctx.budget.budget_left if ctx.budget is not None else math.inf
            if math.isfinite(budget_left) and floor_cents(budget_left) < MIN_BUDGET_USD:
                emit(Failed("budget: nothing is left of the run's budget", kind="budget"))
                return
            if ctx.model is not None:
                budget_left = math.inf  # the gateway binds each request; no cap of its own
            flags = claude_code_flags(
                task, budget_left=budget_left, levels_left=levels_left, notes=ctx.context_notes
            )
            env = claude_code_env(env, self.plan.limits, levels_left=levels_left)
        argv = preset_argv(
            preset,
            task,
            prompt=ctx.prompt,
            agent_id=ctx.agent_id,
            workspace=ctx.workspace,
            flags=flags,
        )
        if argv and "/" not in argv[0]:
            argv[0] = locate_program(argv[0], path=env.get("PATH")) or argv[0]
        parser = make_parser(preset.parser, metered=ctx.model is not None)
        budget = ctx.budget if ctx.model is None else None
        max_line = STREAM_JSON_MAX_LINE if preset.parser == "stream-json" else MAX_LINE
        detail = _detail(preset, argv, ctx.prompt)

        def on_start(pid: int) -> None:
            emit(Started(detail=detail, pid=pid))
            ctx.on_process(pid)

        def on_line(stream: Stream, line: str) -> None:
            for event in parser.feed(stream, line):
                if isinstance(event, Usage) and budget is not None:
                    budget.settle(0.0, event.cost_usd)  # no gateway metered it
                emit(event)

        sandbox = ctx.sandbox
        if sandbox is not None:
            sandbox = sandbox.widened(*preset_writable(preset, task, env))
        try:
            code = await run_streaming(
                argv,
                cwd=ctx.workspace,
                env=env,
                on_line=on_line,
                on_start=on_start,
                on_activity=ctx.on_activity,
                grace=ctx.grace,
                max_line=max_line,
                drain=self.drain,
                sandbox=sandbox,
                secrets=ctx.secrets,
            )
        except OSError as exc:
            kind: FailureKind = "error" if exc.errno in _TRANSIENT_SPAWN_ERRORS else "config"
            hint = f" (hint: {preset.install_hint})" if kind == "config" else ""
            emit(Failed(f"cannot start {argv[0]!r}: {exc}{hint}", kind=kind))
            return
        finally:
            run_id, agent_id = env.get(RUN_ID_VAR, ""), env.get(AGENT_ID_VAR, "")
            if run_id:
                await asyncio.to_thread(sweep_run, run_id, agent_id=agent_id)
        for event in parser.finish(code):
            emit(event)


def preset_writable(preset: Preset, task: Task, env: Mapping[str, str]) -> list[Path]:
    """What a preset's program must write besides its workspace, inside the sandbox: the
    directories the task's ``env`` points HOME and the temp variables to (the plan said so),
    and Claude Code's own state under the home it uses (``~/.claude``, ``~/.claude.json``)."""
    out = [
        Path(value)
        for name, value in task.env
        if name in ("HOME", "TMPDIR", "CLAUDE_CODE_TMPDIR", "CLAUDE_CONFIG_DIR")
        and os.path.isabs(value)
    ]
    home = env.get("HOME", "")
    if preset.flags == "claude-code" and os.path.isabs(home):
        out += [Path(home, ".claude"), Path(home, ".claude.json")]
    return out


_TRANSIENT_SPAWN_ERRORS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


def _detail(preset: Preset, argv: Sequence[str], prompt: str) -> str:
    """The command line for a status line: the prompt and the long system note elided."""

    def show(arg: str) -> str:
        if arg.startswith(BLOCKED_NOTE):
            return "{note}"
        return arg.replace(prompt, "{prompt}") if prompt else arg

    text = f"{preset.name}: {shlex.join(show(a) for a in argv)}"
    return text if len(text) <= 160 else text[:159] + "…"
