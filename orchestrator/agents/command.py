"""Any CLI agent as a subprocess in a process group of its own.

The task's ``command`` is a template: ``{prompt}``, ``{agent_id}`` and ``{workspace}`` are filled
in per argument (other braces stay as written). Output lines become `Output` events (a chunk
read at once in one call, `AgentContext.output`); a line ``BLOCKED: <reason>`` reports a
blocker. The exit code decides how the attempt ends. Timeouts and stalls are the
scheduler's: it cancels `CommandAgent.run`, which stops the whole group.
"""

from __future__ import annotations

import errno
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.agents.base import AgentContext
from orchestrator.agents.output import blocked_reason, outcome, shorten
from orchestrator.events import (
    Blocked,
    Failed,
    FailureKind,
    Started,
)
from orchestrator.plan.model import Task
from orchestrator.process.lines import DEFAULT_MAX_LINE, Stream
from orchestrator.process.spawn import run_streaming

_PLACEHOLDER = re.compile(r"\{(prompt|agent_id|workspace)\}")
_DETAIL_CHARS = 120
_TRANSIENT_SPAWN_ERRORS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
"""Spawn errors the machine may get over; every other one is the command's fault (config)."""


def command_argv(task: Task, *, prompt: str, agent_id: str, workspace: Path) -> list[str]:
    """The argv for one attempt of ``task``, placeholders filled in.

    One pass over each template argument, so a prompt that itself contains ``{workspace}``
    stays as written. For shell tasks the values are shell-quoted (write ``{prompt}``, not
    ``'{prompt}'``) and the result is one string for ``/bin/sh -c``.
    """
    values = {"prompt": prompt, "agent_id": agent_id, "workspace": str(workspace)}
    if task.shell:
        quoted = {name: shlex.quote(value) for name, value in values.items()}
        script = " ".join(task.command)
        return [_PLACEHOLDER.sub(lambda m: quoted[m[1]], script)]
    return [_PLACEHOLDER.sub(lambda m: values[m[1]], part) for part in task.command]


def missing_program(
    task: Task, *, path: str | None = None, workspace: Path | None = None
) -> str | None:
    """The program ``task`` would run when it is not installed (or not executable), else None.

    ``path`` is the child's PATH (the orchestrator's when None); a relative program path is
    taken relative to ``workspace``, the child's working directory. A command line is checked
    only when it plainly starts with a program (not a keyword, a builtin or an expansion);
    programs that are themselves placeholders are not checked (the shell reports exit 127).
    """
    if not task.command:
        return None
    program = _shell_program(task.command[0]) if task.shell else task.command[0]
    if program is None:
        return None
    if workspace is not None:
        program = program.replace("{workspace}", str(workspace))
    if _PLACEHOLDER.search(program):
        return None
    if "/" in program:
        where = Path(program)
        if not where.is_absolute() and workspace is not None:
            where = workspace / where
        found = shutil.which(str(where))
    else:
        found = shutil.which(program, path=path)
    return None if found else program


_SHELL_WORDS = frozenset((
    "!", "{", "}", "[", "[[", ":", ".", "alias", "break", "builtin", "case", "cd", "command",
    "continue", "declare", "echo", "eval", "exec", "exit", "export", "false", "for",
    "function", "getopts", "hash", "if", "kill", "let", "local", "printf", "pwd", "read",
    "readonly", "return", "select", "set", "shift", "source", "test", "time", "trap", "true",
    "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
))  # fmt: skip


def _shell_program(line: str) -> str | None:
    """The program a command line starts with, when it plainly names one (``make -j4 && ..``
    names ``make``); None for keywords, builtins, assignments, expansions and placeholders,
    which only the shell can judge."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if not words:
        return None
    first = words[0]
    if first in _SHELL_WORDS or any(c in first for c in "$=`(){}<>|;&*?[~\\'\""):
        return None
    return first


@dataclass(slots=True)
class CommandAgent:
    """Runs ``ctx.task.command``; one instance may serve many attempts at once (no state)."""

    uses_model: bool = False
    pass_env: tuple[str, ...] = ()
    max_line: int = DEFAULT_MAX_LINE
    drain: float = 0.2

    async def run(self, ctx: AgentContext) -> None:
        task = ctx.task
        if not task.command:
            ctx.emit(Failed(f"task {task.id!r} has no command", kind="config"))
            return
        argv = command_argv(task, prompt=ctx.prompt, agent_id=ctx.agent_id, workspace=ctx.workspace)
        seen = _Seen()

        def on_start(pid: int) -> None:
            seen.started = True
            ctx.emit(Started(detail=_detail(task), pid=pid))
            ctx.on_process(pid)

        def on_lines(stream: Stream, lines: list[str]) -> None:
            rest: Sequence[str] = lines
            if seen.blocked is None and any("BLOCKED" in line for line in lines):
                for i, line in enumerate(lines):
                    seen.blocked = blocked_reason(line)
                    if seen.blocked is not None:  # its line, the blocker, then the rest
                        ctx.output(stream, lines[: i + 1])
                        ctx.emit(Blocked(seen.blocked))
                        rest = lines[i + 1 :]
                        break
            if rest:
                ctx.output(stream, rest)
            if stream == "stdout":
                seen.last_stdout = next(
                    (ln for ln in reversed(lines) if ln.strip()), seen.last_stdout
                )

        env = ctx.env
        if ctx.model is not None:  # its task asked for a key: a gateway token stands in
            model = ctx.model
            if model.anthropic:
                env = {**env, "ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": model.token}
            if model.openai and "OPENAI_API_KEY" in task.pass_env:
                env = {**env, "OPENAI_BASE_URL": model.openai_url, "OPENAI_API_KEY": model.token}
        try:
            code = await run_streaming(
                argv,
                cwd=ctx.workspace,
                env=env,
                on_lines=on_lines,
                on_start=on_start,
                on_activity=ctx.on_activity,
                grace=ctx.grace,
                shell=task.shell,
                max_line=self.max_line,
                drain=self.drain,
                sandbox=ctx.sandbox,
                secrets=ctx.secrets,
            )
        except OSError as exc:
            if seen.started:  # not a spawn error: ours (e.g. emit), let it through
                raise
            kind: FailureKind = "error" if exc.errno in _TRANSIENT_SPAWN_ERRORS else "config"
            ctx.emit(Failed(f"cannot start {task.command[0]!r}: {exc}", kind=kind))
            return
        if seen.blocked is None:  # a blocker already ended the attempt
            ctx.emit(outcome(code, seen.last_stdout))


@dataclass(slots=True)
class _Seen:
    started: bool = False
    last_stdout: str = ""
    blocked: str | None = None


def _detail(task: Task) -> str:
    """The command template (not the filled-in prompt), short enough for a status line."""
    text = task.command[0] if task.shell else shlex.join(task.command)
    return shorten(text, _DETAIL_CHARS)
