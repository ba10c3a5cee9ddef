"""The CLI agent presets as data: argv templates, and the command line built for one attempt.

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
``--allowedTools=<tool>`` per allowed tool from the task (when the task sets neither,
`UNATTENDED`: ``acceptEdits`` and ``Bash``, so it edits files in its workspace and runs
commands without asking anyone); ``--max-budget-usd`` with what is left of the run's budget
only when the run has no model gateway (with one, the gateway binds every request);
``--append-system-prompt`` with the task's context and the ``BLOCKED:`` convention. Its
subagents are capped from the plan's limits through the variables Claude Code reads,
``CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS`` (``max_concurrency``) and
``CLAUDE_CODE_MAX_SUBAGENT_SPAWN_DEPTH`` (the levels left under ``max_depth``); that one
must be at least 1, so with no level left the ``Agent`` tool (once called ``Task``) is taken
away with ``--disallowedTools`` instead.

Presets that talk to a model get the run's model gateway as their base URL and the attempt's
token as their key (`gateway_env`), never the key itself, for each API whose key the
orchestrator holds: Anthropic's (``gateway_url``: claude-code, aider) and OpenAI's
(``gateway_openai_url``, with ``/v1``: codex through ``OPENAI_BASE_URL``, aider through
litellm's ``OPENAI_API_BASE``). The token goes in every variable of ``gateway_keys``
(codex reads ``OPENAI_API_KEY``, or ``CODEX_API_KEY`` in ``exec`` mode).

Pure data and functions; `orchestrator.agents.presets.agent` runs what is built here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeAlias

from orchestrator.agents.command import command_argv
from orchestrator.gateway.grants import Access
from orchestrator.plan.model import SECRET_NAMES, Limits, Task

ParserName: TypeAlias = Literal["stream-json", "lines"]
FlagStyle: TypeAlias = Literal["claude-code", "none"]

FLAGS = "{flags}"
SUBAGENT_TOOLS = ("Agent", "Task")
"""Claude Code's subagent tool: ``Agent`` in its API requests, ``Task`` in its init line."""
UNATTENDED = ("acceptEdits", ("Bash",))
"""claude-code's permission mode and allowed tools when a task sets neither: file edits
inside the workspace and every command run without a prompt (``-p`` mode has no one to ask,
so anything that would prompt is denied). Edits and reads outside the workspace still
prompt, hence are denied; commands are not confined (see docs/plan.md)."""
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
    """Variables the program needs from the orchestrator's environment (never a model
    API's key: `orchestrator.process.env.child_env` drops them)."""
    gateway_url: tuple[str, ...] = ()
    """The variables that give the program Anthropic's base URL: set to the gateway's."""
    gateway_openai_url: tuple[str, ...] = ()
    """The variables that give the program OpenAI's base URL: set to the gateway's."""
    gateway_keys: tuple[str, ...] = ()
    """The variables the program reads its key from: set to the attempt's token."""

    @property
    def uses_model(self) -> bool:
        return bool(self.gateway_url or self.gateway_openai_url)


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
            "pip install claude-agent-sdk into the orchestrator's environment (it bundles the "
            "Claude Code CLI; in a checkout of orchestrator: pip install '.[claude-code]'), "
            "or npm install -g @anthropic-ai/claude-code"
        ),
        flags="claude-code",
        # A fleet of children must not update the binary they all run from.
        env=(("DISABLE_AUTOUPDATER", "1"),),
        pass_env=("ANTHROPIC_BASE_URL",),  # without a gateway (no key here): its own login
        gateway_url=("ANTHROPIC_BASE_URL",),
        gateway_keys=("ANTHROPIC_API_KEY",),
    ),
    "codex": Preset(
        name="codex",
        # The workspace is the plan's choice; codex refuses one that is not a git repository.
        argv=("codex", "exec", "--json", "--skip-git-repo-check", FLAGS, "--", "{prompt}"),
        parser="lines",
        install_hint="npm install -g @openai/codex",
        pass_env=("OPENAI_BASE_URL", "CODEX_HOME"),  # without a gateway: its own login
        gateway_openai_url=("OPENAI_BASE_URL",),
        gateway_keys=("OPENAI_API_KEY", "CODEX_API_KEY"),
    ),
    "aider": Preset(
        name="aider",
        argv=("aider", "--message={prompt}", "--yes-always", "--no-auto-commits", FLAGS),
        parser="lines",
        install_hint="python -m pip install aider-install && aider-install",
        pass_env=("OPENAI_API_BASE",),
        gateway_url=("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"),  # litellm reads either
        gateway_openai_url=("OPENAI_API_BASE", "OPENAI_BASE_URL"),
        gateway_keys=("ANTHROPIC_API_KEY", "OPENAI_API_KEY"),
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
    """What preset ``name`` needs from the orchestrator's environment (the scheduler
    passes them)."""
    preset = BUILTIN.get(name)
    return preset.pass_env if preset is not None else ()


def gateway_env(
    env: Mapping[str, str], preset: Preset, access: Access, *, timeout: float
) -> dict[str, str]:
    """The child's environment pointed at the model gateway, for each API the gateway passes
    on: its URL in every variable the program reads it from, the attempt's token as its key,
    no other credential. Claude Code's request timeout becomes the attempt's (the gateway
    may wait out a storm)."""
    out = {k: v for k, v in env.items() if k not in SECRET_NAMES}
    urls = [(n, access.url) for n in preset.gateway_url] if access.anthropic else []
    if access.openai:
        urls += [(n, access.openai_url) for n in preset.gateway_openai_url]
    for name, url in urls:
        out[name] = url
    anthropic_keys = ("ANTHROPIC_API_KEY",) if access.anthropic else ()
    openai_keys = ("OPENAI_API_KEY", "CODEX_API_KEY") if access.openai else ()
    for name in preset.gateway_keys:
        if name in anthropic_keys or name in openai_keys:
            out[name] = access.token
    if preset.flags == "claude-code" and "API_TIMEOUT_MS" not in env:
        out["API_TIMEOUT_MS"] = str(int(timeout * 1000))
    return out


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
    mode, tools = task.permission_mode, task.allowed_tools
    if mode is None and not tools:
        mode, tools = UNATTENDED
    if mode:
        flags += ["--permission-mode", mode]
    flags += [f"--allowedTools={tool}" for tool in tools]
    if math.isfinite(budget_left):
        flags += ["--max-budget-usd", f"{floor_cents(budget_left):.4f}"]
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


def floor_cents(usd: float) -> float:
    """Rounded down to 1/100 of a cent: the child's cap never exceeds what is left."""
    return math.floor(usd * 10_000) / 10_000
