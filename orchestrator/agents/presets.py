"""CLI coding agents as presets: named argv templates plus the parser for what they print.

============  ==============================================================  ===========
preset        argv template (a plan's ``presets:`` may replace it)            parser
============  ==============================================================  ===========
claude-code   claude -p --output-format stream-json --verbose {flags} --      stream-json
              {prompt}
codex         codex exec --json --skip-git-repo-check {flags} -- {prompt}     lines
aider         aider --message={prompt} --yes-always --no-auto-commits         lines
              {flags}
============  ==============================================================  ===========

``{prompt}``, ``{agent_id}`` and ``{workspace}`` are filled in per argument, as for command
agents. ``{flags}`` stands for zero or more arguments: those the preset derives from the task
and the run, then the task's ``args``; a template without it gets neither. The prompt goes
after ``--`` because Claude Code (commander) takes a prompt starting with ``-`` for an unknown
option, and aider gets ``--message=`` for the same reason.

For claude-code, ``{flags}`` is ``--model``, ``--max-turns``, ``--permission-mode`` and one
``--allowedTools=<tool>`` per allowed tool from the task; ``--max-budget-usd`` with what is
left of the run's budget, so the cap binds on the child too; ``--append-system-prompt`` with
the task's context and the ``BLOCKED:`` convention. Its subagents are capped from the plan's
limits through the variables Claude Code reads, ``CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS``
(``max_concurrency``) and ``CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH`` (the levels left under
``max_depth``); that one must be at least 1, so with no level left the ``Agent`` tool (once
called ``Task``) is taken away with ``--disallowedTools`` instead. When ``claude`` is not on
PATH, the binary bundled in the ``claude-agent-sdk`` wheel (the ``claude-code`` extra) is used.

The process layer is the command agent's: `orchestrator.procs.run_streaming` runs the child in
a process group of its own and stops it with SIGTERM, grace, SIGKILL; exit codes mean what
`orchestrator.agents.command.outcome` says. Claude Code runs each Bash tool call in a session
of its own, out of reach of a signal to the group, so once the child has ended (or was
cancelled) `procs.sweep_run` for this agent kills whatever still carries its markers.
The ``lines`` parser is the command agent's reading of output (``Output`` lines, a
``BLOCKED:`` line, the exit code); ``stream-json`` is `orchestrator.agents.streamjson`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib.util
import math
import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias, cast

from orchestrator.agents.base import SECRET_NAMES, AgentContext
from orchestrator.agents.command import command_argv, missing_program, outcome
from orchestrator.agents.streamjson import BLOCKED_LINE, StreamJsonParser
from orchestrator.events import AgentEvent, Blocked, Failed, FailureKind, Output, Started
from orchestrator.lines import DEFAULT_MAX_LINE as MAX_LINE
from orchestrator.plan import Limits, Plan, Task
from orchestrator.procs import AGENT_ID_VAR, RUN_ID_VAR, Stream, run_streaming, sweep_run

ParserName: TypeAlias = Literal["stream-json", "lines"]
FlagStyle: TypeAlias = Literal["claude-code", "none"]

FLAGS = "{flags}"
STREAM_JSON_MAX_LINE = 8 * 1024 * 1024
"""One stream-json line holds a whole tool result (a file read, a command's output)."""
MIN_BUDGET_USD = 0.0001
"""Less than this left of the run's budget: a claude-code child is not started."""
SUBAGENT_TOOLS = ("Agent", "Task")
"""Claude Code's subagent tool: ``Agent`` in its API requests, ``Task`` in its init line."""
REDACTED = "[REDACTED]"
BLOCKED_NOTE = (
    "When you cannot finish without help from a person or from another task, stop and end "
    "your final message with one line: BLOCKED: <what you need>."
)


@dataclass(frozen=True, slots=True)
class Preset:
    """One CLI coding agent: how to start it, how to read it, how to install it."""

    name: str
    argv: tuple[str, ...]
    parser: ParserName
    install_hint: str
    flags: FlagStyle = "none"
    env: tuple[tuple[str, str], ...] = ()
    """Set for the child unless the task's ``env`` says otherwise."""
    pass_env: tuple[str, ...] = ()
    """Secrets the program needs; see `preset_pass_env`."""


BUILTIN: Mapping[str, Preset] = {
    "claude-code": Preset(
        name="claude-code",
        argv=(
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            FLAGS,
            "--",
            "{prompt}",
        ),
        parser="stream-json",
        install_hint=(
            "pip install 'orchestrator[claude-code]' (its claude-agent-sdk bundles the Claude Code "
            "CLI), or npm install -g @anthropic-ai/claude-code"
        ),
        flags="claude-code",
        # A fleet of children must not update the binary they all run from.
        env=(("DISABLE_AUTOUPDATER", "1"),),
        pass_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"),
    ),
    "codex": Preset(
        name="codex",
        # The workspace is the plan's choice; codex refuses one that is not a git repository.
        argv=("codex", "exec", "--json", "--skip-git-repo-check", FLAGS, "--", "{prompt}"),
        parser="lines",
        install_hint="npm install -g @openai/codex",
        pass_env=("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"),
    ),
    "aider": Preset(
        name="aider",
        argv=("aider", "--message={prompt}", "--yes-always", "--no-auto-commits", FLAGS),
        parser="lines",
        install_hint="python -m pip install aider-install && aider-install",
        pass_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_API_BASE"),
    ),
}


def preset_for(name: str, overrides: Sequence[tuple[str, Sequence[str]]] = ()) -> Preset:
    """The built-in preset ``name``, with the plan's argv template when it gives one."""
    preset = BUILTIN[name]
    for over_name, argv in overrides:
        if over_name == name:
            preset = replace(preset, argv=tuple(argv))
    return preset


def preset_pass_env(name: str) -> tuple[str, ...]:
    """The secrets preset ``name`` needs in its environment (the scheduler passes them)."""
    preset = BUILTIN.get(name)
    return preset.pass_env if preset is not None else ()


@functools.cache
def bundled_claude() -> str | None:
    """The Claude Code binary inside the installed claude-agent-sdk wheel, if any.

    Found without importing the package (which pulls in an MCP server stack).
    """
    try:
        spec = importlib.util.find_spec("claude_agent_sdk")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "_bundled" / "claude"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def locate_program(program: str, *, path: str | None = None) -> str | None:
    """Where ``program`` (no slash in it) is on ``path``; ``claude`` also in the SDK wheel."""
    found = shutil.which(program, path=path)
    if found is None and program == "claude":
        found = bundled_claude()
    return found


def missing_preset_program(
    task: Task,
    *,
    presets: Sequence[tuple[str, Sequence[str]]] = (),
    path: str | None = None,
    workspace: Path | None = None,
) -> tuple[str, str] | None:
    """``(program, install hint)`` when ``task``'s preset program is not installed, else None.

    ``presets`` are the plan's template overrides; ``path`` and ``workspace`` as for
    `orchestrator.agents.command.missing_program`.
    """
    preset = preset_for(task.agent, presets)
    program = preset.argv[0] if preset.argv else ""
    if program == "claude" and locate_program(program, path=path) is not None:
        return None
    as_command = replace(task, agent="command", command=preset.argv, shell=False)
    missing = missing_program(as_command, path=path, workspace=workspace)
    return None if missing is None else (missing, preset.install_hint)


# --- what one attempt runs --------------------------------------------------------------------


def claude_code_flags(
    task: Task,
    *,
    budget_left: float,
    levels_left: int,
    notes: Sequence[str] = (),
) -> list[str]:
    """The claude-code arguments that come from the task and the run's limits."""
    flags = ["--model", task.model, "--max-turns", str(task.max_turns)]
    if task.permission_mode:
        flags += ["--permission-mode", task.permission_mode]
    flags += [f"--allowedTools={tool}" for tool in task.allowed_tools]
    if math.isfinite(budget_left):
        flags += ["--max-budget-usd", f"{_floor_cents(budget_left):.4f}"]
    if levels_left <= 0:
        flags += [f"--disallowedTools={tool}" for tool in SUBAGENT_TOOLS]
    context = "\n".join(f"- {n}" for n in notes)
    note = BLOCKED_NOTE + (
        f"\n\nWhat the tasks this one depends on produced:\n{context}" if notes else ""
    )
    return [*flags, "--append-system-prompt", note]


def preset_argv(
    preset: Preset,
    task: Task,
    *,
    prompt: str,
    agent_id: str,
    workspace: Path,
    flags: Sequence[str] = (),
) -> list[str]:
    """The filled-in template: placeholders per argument, ``{flags}`` spliced in whole."""
    out: list[str] = []
    for part in preset.argv:
        if part == FLAGS:
            out += [*flags, *task.args]
        else:
            filled = command_argv(
                replace(task, command=(part,), shell=False),
                prompt=prompt,
                agent_id=agent_id,
                workspace=workspace,
            )
            out += filled
    return out


def claude_code_env(env: Mapping[str, str], limits: Limits, *, levels_left: int) -> dict[str, str]:
    """Claude Code's own caps on its subagents, from the plan's limits.

    A smaller value the task set in its ``env`` stays; a larger one is lowered.
    """
    out = dict(env)
    caps = {"CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS": max(limits.max_concurrency, 1)}
    if levels_left > 0:
        caps["CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH"] = levels_left
    for name, ceiling in caps.items():
        try:
            given = int(out.get(name, ""))
        except ValueError:
            given = ceiling
        out[name] = str(min(max(given, 1), ceiling))
    return out


def _floor_cents(usd: float) -> float:
    """Rounded down to 1/100 of a cent: the child's cap never exceeds what is left."""
    return math.floor(usd * 10_000) / 10_000


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
            match = BLOCKED_LINE.match(line)
            if match:
                self.blocked = True
                events.append(Blocked(match[1].strip() or "(no reason given)"))
        if stream == "stdout" and line.strip():
            self.last_stdout = line
        return events

    def finish(self, code: int) -> list[AgentEvent]:
        return [] if self.blocked else [outcome(code, self.last_stdout)]


def make_parser(name: ParserName) -> OutputParser:
    if name == "stream-json":
        return StreamJsonParser()
    return LinesParser()


# --- the agent ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PresetAgent:
    """Runs one preset for every task of that kind in a run (no per-attempt state)."""

    kind: str
    plan: Plan
    drain: float = 0.2

    async def run(self, ctx: AgentContext) -> None:
        preset = preset_for(self.kind, self.plan.presets)
        task = ctx.task
        emit = _scrubbing(ctx)
        env = {**dict(preset.env), **ctx.env}
        flags: list[str] = []
        if preset.flags == "claude-code":
            levels_left = self.plan.limits.max_depth - ctx.depth
            budget_left = ctx.governor.budget_left if ctx.governor is not None else math.inf
            if math.isfinite(budget_left) and _floor_cents(budget_left) < MIN_BUDGET_USD:
                emit(Failed("budget: nothing is left of the run's budget", kind="budget"))
                return
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
        parser = make_parser(preset.parser)
        max_line = STREAM_JSON_MAX_LINE if preset.parser == "stream-json" else MAX_LINE
        detail = _detail(preset, argv, ctx.prompt)

        def on_start(pid: int) -> None:
            emit(Started(detail=detail, pid=pid))
            ctx.on_process(pid)

        def on_line(stream: Stream, line: str) -> None:
            for event in parser.feed(stream, line):
                emit(event)

        try:
            code = await run_streaming(
                argv,
                cwd=ctx.workspace,
                env=env,
                on_line=on_line,
                on_start=on_start,
                grace=ctx.grace,
                max_line=max_line,
                drain=self.drain,
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


_TRANSIENT_SPAWN_ERRORS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


def _detail(preset: Preset, argv: Sequence[str], prompt: str) -> str:
    """The command line for a status line: the prompt and the long system note elided."""

    def show(arg: str) -> str:
        if arg.startswith(BLOCKED_NOTE):
            return "{note}"
        return arg.replace(prompt, "{prompt}") if prompt else arg

    text = f"{preset.name}: {shlex.join(show(a) for a in argv)}"
    return text if len(text) <= 160 else text[:159] + "…"


def _scrubbing(ctx: AgentContext) -> Callable[[AgentEvent], None]:
    """``ctx.emit`` that masks the values of the API key and token in every text field.

    A child that prints its environment (``env`` in a Bash tool) must not put the key into a
    progress file.
    """
    found = [env.get(n, "") for env in (ctx.env, os.environ) for n in SECRET_NAMES]
    secrets = sorted({s for s in found if len(s) >= 8}, key=len, reverse=True)

    def emit(event: AgentEvent) -> None:
        changes: dict[str, str] = {}
        for f in fields(event):
            value = getattr(event, f.name)
            if isinstance(value, str) and any(s in value for s in secrets):
                for secret in secrets:
                    value = value.replace(secret, REDACTED)
                changes[f.name] = value
        ctx.emit(replace(cast(Any, event), **changes) if changes else event)

    return emit
