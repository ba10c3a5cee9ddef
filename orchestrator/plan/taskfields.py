"""The keys a task shares with ``defaults:`` and ``fixer:``, read from a plan's nodes.

`Defaults` is what a task gets for each of these keys it leaves out. The readers here take
the `Fields` of whichever mapping holds the key, so a task, the defaults and the fixer report
the same mistake in the same words.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from orchestrator.plan.fields import Errors, Fields, closest, text_of
from orchestrator.plan.model import AGENT_KINDS, PRESETS, SECRET_NAMES, Task
from orchestrator.plan.nodes import Map, Seq, show

DEFAULT_AGENT = "claude"
"""The agent of a task when neither the task nor ``defaults`` names one (see docs/plan.md)."""

MEANT = {"name": "id", "cmd": "command", "args": "command", "steps": "script"}
"""Keys people write for the ones they mean (``args`` is a task key; for a fixer it is not)."""
MEANT |= dict.fromkeys(("deps", "needs", "requires", "after", "depends"), "depends_on")
MEANT |= {"allowedTools": "allowed_tools", "permissionMode": "permission_mode"}

TASK_DEFAULT_KEYS: tuple[str, ...] = (
    "model", "timeout", "stall_timeout", "max_turns", "env", "pass_env", "permission_mode",
    "allowed_tools", "args", "budget_usd",
)  # fmt: skip
"""The keys a task, ``defaults:`` and ``fixer:`` all accept (besides ``agent``)."""

AGENT_KEYS: dict[str, tuple[str, ...]] = {
    "permission_mode": ("claude-code",),
    "allowed_tools": ("claude-code",),
    "args": tuple(sorted(PRESETS)),
}
"""Keys only some agents use: the agents whose command line
`orchestrator.agents.presets.agent` builds from them (claude-code turns the first two into
flags; every preset appends ``args``)."""

_KINDS = sorted(AGENT_KINDS | PRESETS)
DEFAULT_KEYS: tuple[str, ...] = ("agent", "command", *TASK_DEFAULT_KEYS)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_HINT = "use letters, digits and '_', not starting with a digit"
_MODE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODE_HINT = "Claude Code's modes: default, acceptEdits, plan, auto, dontAsk, bypassPermissions"
_BASE = Task(id="-")
CREDENTIAL_NAMES: frozenset[str] = frozenset({
    "GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITLAB_TOKEN", "GL_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
    "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "NPM_TOKEN",
    "NODE_AUTH_TOKEN", "PYPI_TOKEN", "TWINE_PASSWORD", "DOCKER_PASSWORD",
    "CLOUDFLARE_API_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "HEROKU_API_KEY",
    "SLACK_BOT_TOKEN", "STRIPE_SECRET_KEY", "VAULT_TOKEN", "DATABASE_URL",
})  # fmt: skip
"""Well-known credentials a plan may not pass in an agent's environment (``pass_env``):
declared under ``secrets:`` a program gets them once, through a pipe. The model APIs' keys
are not here: ``pass_env: [ANTHROPIC_API_KEY]`` asks for a gateway token in their place."""
_SECRET_HINT = (
    "declare it under secrets: [NAME] to hand it to the task's program once, through a pipe "
    "(ORCHESTRATOR_SECRETS_FD) that the tools it runs find empty; see docs/plan.md, Secrets"
)


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a task gets for each field it leaves out."""

    agent: str = DEFAULT_AGENT
    model: str = _BASE.model
    timeout: float = _BASE.timeout
    stall_timeout: float = _BASE.stall_timeout
    max_turns: int = _BASE.max_turns
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ()
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    budget_usd: float | None = None
    command: tuple[str, ...] = ()
    """For tasks that give none (a command agent's template)."""
    shell: bool = False

    def as_task(self, task_id: str) -> Task:
        """A task of these defaults (the build's fixer starts from it)."""
        return Task(
            task_id, agent=self.agent, command=self.command, shell=self.shell,
            model=self.model, timeout=self.timeout,
            stall_timeout=self.stall_timeout, max_turns=self.max_turns, env=self.env,
            pass_env=self.pass_env, permission_mode=self.permission_mode,
            allowed_tools=self.allowed_tools, args=self.args, budget_usd=self.budget_usd,
        )  # fmt: skip


def defaults_of(errs: Errors, node: Map | None) -> Defaults:
    """The ``defaults:`` mapping; a key it leaves out (or gets wrong) keeps the built-in value."""
    if node is None:
        return Defaults()
    f = Fields(errs, node, DEFAULT_KEYS, "defaults", MEANT)
    base = Defaults()
    model, timeout, stall = f.text("model"), f.duration("timeout"), f.duration("stall_timeout")
    turns, env, pass_env = f.count("max_turns", least=1), env_of(f), pass_env_of(f)
    mode, tools, args = permission_mode_of(f), allowed_tools_of(f), args_of(f)
    budget = budget_of(f)
    written = command_of(f)
    command, shell = written if written is not None else ((), False)
    return Defaults(
        agent=agent_of(f, base.agent),
        command=command,
        shell=shell,
        model=model if model is not None else base.model,
        timeout=timeout if timeout is not None else base.timeout,
        stall_timeout=stall if stall is not None else base.stall_timeout,
        max_turns=turns if turns is not None else base.max_turns,
        env=env if env is not None else base.env,
        pass_env=pass_env if pass_env is not None else base.pass_env,
        permission_mode=mode if mode is not None else base.permission_mode,
        allowed_tools=tools if tools is not None else base.allowed_tools,
        args=args if args is not None else base.args,
        budget_usd=budget if budget is not None else base.budget_usd,
    )


def budget_of(f: Fields) -> float | None:
    """A task's own budget: USD, more than 0."""
    return f.number("budget_usd", least=0, above=True, rule="bad-value")


def check_agent_keys(f: Fields, agent: str) -> None:
    """A key the agent would ignore is a mistake (``defaults:`` may set it for the tasks
    that use it)."""
    for key, agents in AGENT_KEYS.items():
        if agent in agents or f.get(key) is None:
            continue
        users = agents[0] if len(agents) == 1 else "preset"
        message = f"{f.owner}: {key} is for {users} agents; agent {show(agent)} ignores it"
        hint = f"remove {key}, or set agent: " + " | ".join(agents)
        if (agent, key) == ("command", "args"):
            hint = "put the arguments in command:"
        f.errs.add(f.node.keys[key], "not-for-agent", message, hint)


def agent_of(f: Fields, default: str) -> str:
    """The agent kind named in ``f`` (else ``default``); "" after an error."""
    node = f.get("agent")
    if node is None:
        return default
    name = f.text("agent")
    if name is None:
        return ""
    if name not in AGENT_KINDS and name not in PRESETS:
        hint = closest(name, _KINDS) or "agents: " + ", ".join(_KINDS)
        f.errs.add(node, "unknown-agent", f"{f.owner}: unknown agent {show(name)}", hint)
        return ""
    return name


def require(
    f: Fields, agent: str, prompt: str | None, *, fixer: bool = False, command: bool = False
) -> None:
    """A claude or preset agent needs a prompt, a command agent a command (its own, or
    ``command`` true: one from ``defaults:``), scripted a script."""
    script = f.get("script")
    if agent == "command" and f.get("command") is None and not command:
        rule, needed = "missing-command", "command"
    elif agent == "scripted" and (script is None or (isinstance(script, Seq) and not script.items)):
        rule, needed = "missing-script", "script"
    elif agent not in ("command", "scripted") and not fixer:
        if f.get("prompt") is not None and (prompt is None or prompt.strip()):
            return
        rule, needed = "missing-prompt", "prompt"
    else:
        return
    hint = f"add {needed}:"
    if needed != "script" and script is not None:
        hint = "it has a script: set agent: scripted"
    elif needed != "command" and f.get("command") is not None:
        hint = "it has a command: set agent: command"
    if "agent" not in f:
        hint += f" (it names no agent, so it gets {agent!r})"
    f.errs.add(f.node, rule, f"{f.owner}: a {agent} agent needs a {needed}", hint)


def command_of(f: Fields) -> tuple[tuple[str, ...], bool] | None:
    """The command and whether it runs in a shell: a string is one command line for
    ``sh -c``; a list is the program and its arguments, run without a shell."""
    node = f.get("command")
    if node is None:
        return None
    what = f"{f.owner}: command"
    if isinstance(node, Map):
        f.wrong("command", node, "a command line (runs in sh) or a list of arguments (no shell)")
        return None
    if isinstance(node, Seq):
        parts = [text_of(f.errs, item, f"{what} entry") for item in node.items]
        argv = tuple(p for p in parts if p is not None)
        if len(argv) != len(parts):
            return None
        if not argv or not argv[0].strip():
            f.errs.add(node, "bad-command", f"{what} is an empty list")
            return None
        if len(argv) == 1 and _looks_like_a_command_line(argv[0]):
            message = f"{what}: the program {show(argv[0])} is a whole command line"
            hint = "a list is a program and its arguments, run without a shell: write the "
            hint += "command line as a string (it runs in sh -c), or split it into the list"
            f.errs.add(node, "bad-command", message, hint)
            return None
        return argv, False
    text = text_of(f.errs, node, what)
    if text is None:
        return None
    if not text.strip():
        f.errs.add(node, "bad-command", f"{what} is empty")
        return None
    try:
        shlex.split(text, comments=True)  # the shell would refuse it only once it runs
    except ValueError as exc:  # "No closing quotation"
        message = f"{what}: cannot read {show(text)} as a command line: {exc}"
        f.errs.add(node, "bad-command", message, "close the quote, or write a list")
        return None
    return (text,), True


def _looks_like_a_command_line(program: str) -> bool:
    """A lone list entry such as ``make all && echo done``: a command line, not a program."""
    return any(c in program for c in " \t;|&$<>") and not program.startswith(("/", "./", "{"))


def env_of(f: Fields) -> tuple[tuple[str, str], ...] | None:
    node = f.get("env")
    if node is None:
        return None
    if not isinstance(node, Map):
        f.wrong("env", node, "a mapping of NAME: value")
        return None
    out: list[tuple[str, str]] = []
    for name, value in node.items.items():
        if not _ENV_NAME.fullmatch(name):
            message = f"{f.owner}: env name {show(name)} is not allowed"
            f.errs.add(node.keys[name], "bad-env", message, _ENV_HINT)
        text = text_of(f.errs, value, f"{f.owner}: env {show(name)}")
        if text is not None:
            out.append((name, text))
    return tuple(out)


def pass_env_of(f: Fields) -> tuple[str, ...] | None:
    names = f.names("pass_env", "environment variable names")
    if names is None:
        return None
    for name, node in names:
        if not _ENV_NAME.fullmatch(name):
            message = f"{f.owner}: pass_env name {show(name)} is not allowed"
            f.errs.add(node, "bad-env", message, _ENV_HINT)
        elif name in CREDENTIAL_NAMES:
            message = (
                f"{f.owner}: pass_env {name} would put a credential in the agent's environment, "
                "where every tool it runs can read it"
            )
            f.errs.add(node, "secret-in-env", message, _SECRET_HINT)
    return tuple(dict.fromkeys(name for name, _ in names))


def secrets_of(f: Fields, agent: str) -> tuple[str, ...]:
    """Variables handed to a command or preset's program once, through a pipe."""
    names = f.names("secrets", "environment variable names")
    if names is None:
        return ()
    if agent not in PRESETS and agent != "command":
        message = f"{f.owner}: secrets are for programs (command agents and presets), not {agent}"
        hint = "a claude or scripted agent's model requests go through the gateway"
        f.errs.add(f.node.items["secrets"], "bad-key", message, hint)
    for name, node in names:
        if not _ENV_NAME.fullmatch(name):
            message = f"{f.owner}: secrets name {show(name)} is not allowed"
            f.errs.add(node, "bad-env", message, _ENV_HINT)
        elif name in SECRET_NAMES:  # the model gateway holds it; no agent ever gets it
            message = f"{f.owner}: secrets may not name {name}: the run's model gateway holds it"
            hint = f"pass_env: [{name}] gives the program a gateway URL and token in its place"
            f.errs.add(node, "secret-model-key", message, hint)
    return tuple(dict.fromkeys(name for name, _ in names))


def permission_mode_of(f: Fields) -> str | None:
    """One word, handed to the preset as it is (Claude Code adds modes now and then)."""
    mode = f.text("permission_mode")
    if mode is not None and not _MODE.fullmatch(mode):
        message = f"{f.owner}: permission_mode {show(mode)} is not a mode name"
        f.errs.add(f.node.items["permission_mode"], "bad-value", message, _MODE_HINT)
        return None
    return mode


def allowed_tools_of(f: Fields) -> tuple[str, ...] | None:
    """Tool names or rules (``Edit``, ``Bash(git diff *)``), each written once."""
    names = f.names("allowed_tools", "tool names")
    if names is None:
        return None
    for name, node in names:
        if not name.strip():
            f.errs.add(node, "bad-value", f"{f.owner}: allowed_tools has an empty entry")
    return tuple(dict.fromkeys(name for name, _ in names if name.strip()))


def args_of(f: Fields) -> tuple[str, ...] | None:
    """Arguments appended to a preset's command line, as written (repeats are kept)."""
    names = f.names("args", "arguments")
    return None if names is None else tuple(name for name, _ in names)
