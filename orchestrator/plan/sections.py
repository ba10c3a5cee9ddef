"""The plan-wide sections besides the tasks: ``limits``, ``prices``, ``build``, ``fixer`` and
``presets``, each read from a plan's nodes into its frozen model.

A section that is absent reads as its model's defaults; a key that is wrong is reported and
keeps its default, so the rest of the plan is still checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator.plan.fields import Errors, Fields, closest, mapping_of, text_of
from orchestrator.plan.model import (
    NETWORKS,
    PRESETS,
    SANDBOX_MODES,
    Build,
    FixerSpec,
    Limits,
    Notify,
    Price,
    SandboxSpec,
)
from orchestrator.plan.nodes import Map, Node, Scalar, Seq, kind, show
from orchestrator.plan.steps import script_of
from orchestrator.plan.taskfields import (
    MEANT,
    TASK_DEFAULT_KEYS,
    Defaults,
    agent_of,
    allowed_tools_of,
    args_of,
    budget_of,
    check_agent_keys,
    command_of,
    env_of,
    pass_env_of,
    permission_mode_of,
    require,
)

LIMIT_KEYS: tuple[str, ...] = (
    "max_concurrency", "max_agents", "max_depth", "budget_usd", "spawn_rate", "grace", "memory",
    "pids",
)  # fmt: skip
SANDBOX_KEYS: tuple[str, ...] = ("mode", "network", "writable", "readable")
MIN_MEMORY = 16 * 1024 * 1024
"""Less memory than this cannot start even a shell in a sandbox: a typo (``memory: 512``)."""
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_SIZE_HINT = "write bytes (1073741824) or a size like 512m, 4g, 2GiB"
BUILD_KEYS = ("command", "timeout", "max_fix_cycles", "after")
NOTIFY_KEYS = ("command", "bell", "timeout")
FIXER_KEYS: tuple[str, ...] = (
    "agent", "prompt", "command", "script", "fix_timeouts", *TASK_DEFAULT_KEYS,
)  # fmt: skip
_PRESET_NAMES = sorted(PRESETS)
_TEMPLATE_HINT = 'write command: [program, "{flags}", --, "{prompt}"]'


def limits_of(errs: Errors, node: Map | None) -> Limits:
    base = Limits()
    if node is None:
        return base
    f = Fields(errs, node, LIMIT_KEYS, "limits")
    rule = "bad-limit"
    concurrency = f.count("max_concurrency", least=1, rule=rule)
    agents = f.count("max_agents", least=1, rule=rule)
    depth = f.count("max_depth", least=0, rule=rule)
    budget = f.number("budget_usd", least=0, above=True, rule=rule)
    rate = f.number("spawn_rate", least=0, above=True, rule=rule)
    grace = f.duration("grace", zero_ok=True, rule=rule)
    memory = _size(f, "memory", rule)
    pids = f.count("pids", least=8, rule=rule)
    return Limits(
        max_concurrency=concurrency if concurrency is not None else base.max_concurrency,
        max_agents=agents if agents is not None else base.max_agents,
        max_depth=depth if depth is not None else base.max_depth,
        budget_usd=budget if budget is not None else base.budget_usd,
        spawn_rate=rate if rate is not None else base.spawn_rate,
        grace=grace if grace is not None else base.grace,
        memory=memory if memory is not None else base.memory,
        pids=pids if pids is not None else base.pids,
    )


def _size(f: Fields, key: str, rule: str) -> int | None:
    """Bytes from a whole number or a size text (``512m``, ``4g``, ``2GiB``)."""
    node = f.get(key)
    if node is None:
        return None
    value = node.value if isinstance(node, Scalar) else None
    if isinstance(value, bool) or not isinstance(value, int | str):
        f.wrong(key, node, "a size (bytes, or text like 512m, 4g)", _SIZE_HINT)
        return None
    if isinstance(value, int):
        size: float | None = value
    else:
        m = _SIZE.fullmatch(value)
        size = float(m[1]) * 1024 ** "bkmgt".index((m[2] or "b").lower()) if m else None
    if size is None:
        f.errs.add(node, rule, f"{f.owner}: {key}: {show(value)} is not a size", _SIZE_HINT)
        return None
    if not MIN_MEMORY <= size <= 2**50:
        message = f"{f.owner}: {key} must be between 16m and 1p, not {show(value)}"
        f.errs.add(node, rule, message, _SIZE_HINT)
        return None
    return int(size)


def sandbox_of(errs: Errors, node: Node | None, base: Path) -> SandboxSpec:
    """``sandbox: required | best-effort | off``, or a mapping with ``mode``, ``network``,
    ``writable`` and ``readable`` (paths relative to the plan file, ``~`` expanded)."""
    if node is None or node.broken:
        return SandboxSpec()
    if isinstance(node, Scalar):
        return SandboxSpec(mode=_choice(errs, node, "sandbox", SANDBOX_MODES))  # type: ignore[arg-type]
    table = mapping_of(errs, node, "sandbox")
    if table is None:
        return SandboxSpec()
    f = Fields(errs, table, SANDBOX_KEYS, "sandbox")
    mode = f.get("mode")
    network = f.get("network")
    return SandboxSpec(
        mode=_choice(errs, mode, "sandbox: mode", SANDBOX_MODES) if mode else None,  # type: ignore[arg-type]
        network=_choice(errs, network, "sandbox: network", NETWORKS) or "full"  # type: ignore[arg-type]
        if network
        else "full",
        writable=_paths(f, "writable", base),
        readable=_paths(f, "readable", base),
    )


def _choice(errs: Errors, node: Node, what: str, choices: tuple[str, ...]) -> str | None:
    text = text_of(errs, node, what)
    if text is None:
        return None
    if text not in choices:
        hint = closest(text, choices) or "one of: " + ", ".join(choices)
        errs.add(
            node, "bad-value", f"{what} must be one of {', '.join(choices)}, not {show(text)}", hint
        )
        return None
    return text


def _paths(f: Fields, key: str, base: Path) -> tuple[Path, ...]:
    out = []
    for text, _ in f.names(key, "paths") or []:
        path = os.path.join(base, os.path.expanduser(text))
        out.append(Path(os.path.normpath(path)))
    return tuple(out)


def prices_of(errs: Errors, node: Map | None) -> tuple[tuple[str, Price], ...]:
    """Model name -> USD per million input and output tokens, in the order written."""
    out: list[tuple[str, Price]] = []
    for model, value in (node.items if node else {}).items():
        owner = f"prices: {show(model)}"
        entry = mapping_of(errs, value, owner)
        if entry is None:
            continue
        f = Fields(errs, entry, ("input", "output"), owner)
        rates = [
            f.number(key, least=0, above=False, rule="bad-price") for key in ("input", "output")
        ]
        for key in ("input", "output"):
            if key not in f:
                errs.add(entry, "missing-field", f"{owner} needs {key} (USD per Mtok)")
        if rates[0] is not None and rates[1] is not None:
            out.append((model, Price(rates[0], rates[1])))
    return tuple(out)


def fixer_of(errs: Errors, node: Map | None, defaults: Defaults | None = None) -> FixerSpec:
    """How fixer agents are made: every key a task has, all optional, and ``fix_timeouts``;
    ``defaults`` is where the build's fixer starts from."""
    base = (defaults or Defaults()).as_task("build")
    if node is None:
        return FixerSpec(base=base)
    f = Fields(errs, node, FIXER_KEYS, "fixer", MEANT)
    agent = agent_of(f, "")
    prompt = f.text("prompt")
    written = command_of(f)
    command, shell = written if written is not None else ((), False)
    if agent:
        require(f, agent, prompt, fixer=True)
        check_agent_keys(f, agent)
    return FixerSpec(
        agent=agent or None,
        model=f.text("model"),
        prompt=prompt or "",
        command=command,
        shell=shell,
        script=script_of(f, "script") or (),
        timeout=f.duration("timeout"),
        stall_timeout=f.duration("stall_timeout"),
        max_turns=f.count("max_turns", least=1),
        fix_timeouts=bool(f.flag("fix_timeouts")),
        env=env_of(f),
        pass_env=pass_env_of(f),
        permission_mode=permission_mode_of(f),
        allowed_tools=allowed_tools_of(f),
        args=args_of(f),
        budget_usd=budget_of(f),
        base=base,
    )


def build_of(errs: Errors, node: Map | None, names: set[str]) -> Build:
    """The build check; ``after`` may name any of ``names`` (task ids and batch names)."""
    base = Build()
    if node is None:
        return base
    f = Fields(errs, node, BUILD_KEYS, "build")
    if f.get("command") is None and "command" not in f:
        hint = "add command: python -m pytest -q"
        errs.add(node, "missing-command", "build needs a command", hint)
    written = command_of(f)
    command, shell = written if written is not None else ((), False)
    timeout = f.duration("timeout")
    cycles = f.count("max_fix_cycles", least=0)
    after = f.names("after", "task ids or batch names") or []
    for number, (name, at) in enumerate(after):
        if name not in names:
            message = f"build: after names {show(name)}, which is no task or batch"
            errs.add(at, "unknown-after", message, closest(name, names) if number < 20 else "")
    return Build(
        command=command,
        shell=shell,
        timeout=timeout if timeout is not None else base.timeout,
        max_fix_cycles=cycles if cycles is not None else base.max_fix_cycles,
        after=tuple(dict.fromkeys(name for name, _ in after)),
    )


def notify_of(errs: Errors, node: Map | None) -> Notify:
    """``notify:``: a command run when the run ends, and the terminal bell (on by default
    once the section is there)."""
    if node is None:
        return Notify()
    f = Fields(errs, node, NOTIFY_KEYS, "notify")
    written = command_of(f)
    command, shell = written if written is not None else ((), False)
    bell = f.flag("bell")
    timeout = f.duration("timeout")
    return Notify(
        command=command,
        shell=shell,
        bell=True if bell is None else bell,
        timeout=timeout if timeout is not None else Notify().timeout,
    )


def presets_of(errs: Errors, node: Map | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Preset name -> the argv template that replaces the built-in one, in the order written."""
    if node is None:
        return ()
    out: list[tuple[str, tuple[str, ...]]] = []
    for name, value in node.items.items():
        owner = f"presets: {show(name)}"
        if name not in PRESETS:
            hint = closest(name, _PRESET_NAMES) or "presets: " + ", ".join(_PRESET_NAMES)
            message = f"presets: unknown preset {show(name)}"
            errs.add(node.keys[name], "unknown-preset", message, hint)
            continue
        if not isinstance(value, Map):
            if not value.broken:
                message = f"{owner} must be a mapping {{command: [...]}}, not {kind(value)}"
                errs.add(value, "wrong-type", message, f"write {name}: {{command: [...]}}")
            continue
        f = Fields(errs, value, ("command",), owner)
        argv = _template(f)
        if argv is not None:
            out.append((name, argv))
    return tuple(out)


def _template(f: Fields) -> tuple[str, ...] | None:
    """A non-empty list of arguments whose first, the program, is not blank."""
    node = f.get("command")
    what = f"{f.owner}: command"
    if node is None:
        written = f.node.items.get("command")
        if written is None or not written.broken:  # absent, or null
            f.errs.add(f.node, "missing-command", f"{f.owner} needs a command", _TEMPLATE_HINT)
        return None
    if not isinstance(node, Seq):
        f.wrong("command", node, "a list of arguments", _TEMPLATE_HINT)
        return None
    if not node.items:
        f.errs.add(node, "bad-command", f"{what} is an empty list", _TEMPLATE_HINT)
        return None
    parts = [text_of(f.errs, item, f"{what} entry") for item in node.items]
    argv = tuple(p for p in parts if p is not None)
    if len(argv) != len(parts):
        return None
    if not argv[0].strip():
        f.errs.add(node.items[0], "bad-command", f"{what}: the program is empty")
        return None
    return argv
