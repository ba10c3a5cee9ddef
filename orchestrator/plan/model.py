"""What a plan is once loaded: frozen Plan, Task, limits, build, fixer and script steps.

Loading and validating plan files lives in `orchestrator.plan.load`; the graph functions in
`orchestrator.plan.graph`. Plain data, testable without files or an event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeAlias

AGENT_KINDS: frozenset[str] = frozenset({"claude", "command", "scripted"})
PRESETS: frozenset[str] = frozenset({"claude-code", "codex", "aider"})
SECRET_NAMES: frozenset[str] = frozenset(
    {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "CODEX_API_KEY"}
)
"""The model APIs' credentials: the orchestrator's model gateway holds them, no child does
(``pass_env`` of one asks for a gateway token in its place; ``secrets:`` may not name one)."""


# --- scripted agent steps -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Write:
    path: str
    content: str


@dataclass(frozen=True, slots=True)
class Run:
    command: str


@dataclass(frozen=True, slots=True)
class Block:
    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Step: TypeAlias = Say | Sleep | Write | Run | Block | Fail
STEP_NAMES: tuple[str, ...] = ("say", "sleep", "write", "run", "block", "fail")


# --- plan model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work for one agent; attempts and fixers are derived from it at run time."""

    id: str
    agent: str = "scripted"
    prompt: str = ""
    depends_on: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    shell: bool = False
    script: tuple[Step, ...] = ()
    retry_script: tuple[Step, ...] | None = None
    model: str = "claude-sonnet-4-6"
    """The default: a current model (the SDK warns about deprecated ones; the warning
    becomes a note in the progress file)."""
    timeout: float = 20 * 60.0
    stall_timeout: float = 5 * 60.0
    max_turns: int = 30
    env: tuple[tuple[str, str], ...] = ()
    pass_env: tuple[str, ...] = ()
    batch: str | None = None
    line: int = 0
    permission_mode: str | None = None
    """For CLI presets that have one (claude-code's --permission-mode)."""
    allowed_tools: tuple[str, ...] = ()
    """For CLI presets that have one (claude-code's --allowedTools)."""
    args: tuple[str, ...] = ()
    """Extra arguments appended to a preset's command line."""
    budget_usd: float | None = None
    """USD this task's attempts may spend on model requests together (the run's budget
    binds as well)."""
    secrets: tuple[str, ...] = ()
    """Names of the orchestrator's environment variables whose values the task's program
    gets once, through a pipe (``ORCHESTRATOR_SECRETS_FD``), never in its environment,
    arguments or files: for programs that need a real credential the gateway cannot stand
    in for. See docs/plan.md ("Secrets")."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Run-wide ceilings, each enforced by the governor at every spawn."""

    max_concurrency: int = 4
    max_agents: int = 40
    max_depth: int = 2
    budget_usd: float | None = None
    spawn_rate: float = 50.0
    """Agents started per second at most (a token bucket holding one second of starts,
    or max_concurrency if that is more)."""
    grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when an agent's process group is stopped."""
    memory: int = 4 * 1024**3
    """Bytes of memory each agent's sandbox may use (its processes together; cgroups)."""
    pids: int = 1024
    """Processes (and threads) each agent's sandbox may hold at once (cgroups)."""


SandboxMode: TypeAlias = Literal["required", "best-effort", "off"]
Network: TypeAlias = Literal["none", "gateway", "full"]
SANDBOX_MODES: tuple[str, ...] = ("required", "best-effort", "off")
NETWORKS: tuple[str, ...] = ("none", "gateway", "full")


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """How the plan wants its agents confined (`orchestrator.sandbox` does it).

    ``mode`` None means the default: ``required`` when the plan has agents that use a model
    (the run holds an API key worth protecting), else ``best-effort``.
    """

    mode: SandboxMode | None = None
    network: Network = "full"
    writable: tuple[Path, ...] = ()
    """Paths besides the workspace an agent may write (absolute, ``~`` expanded)."""
    readable: tuple[Path, ...] = ()
    """Home secrets the plan lets agents read (``~/.ssh`` ...; hidden otherwise)."""


@dataclass(frozen=True, slots=True)
class Build:
    command: tuple[str, ...] = ()
    """One command line for ``sh -c`` (``shell``), or a program and its arguments."""
    shell: bool = True
    timeout: float = 10 * 60.0
    max_fix_cycles: int = 2
    after: tuple[str, ...] = ()
    """Task ids or batch names after which the build also runs (it always runs at the end)."""


@dataclass(frozen=True, slots=True)
class Notify:
    """What tells a person who walked away that the run ended."""

    command: tuple[str, ...] = ()
    """Run once the run ended, with its outcome in ``ORCHESTRATOR_*`` variables."""
    shell: bool = False
    bell: bool = False
    """Ring the terminal's bell at the end when the run's output is a terminal."""
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class FixerSpec:
    """How fixer agents are made; the same keys as a task, all optional.

    A key left out comes from the blocked task (for the build's fixer: from ``base``, what
    ``defaults:`` gives a task); ``None`` or ``()`` means "left out".
    """

    agent: str | None = None
    model: str | None = None
    prompt: str = ""
    command: tuple[str, ...] = ()
    shell: bool = False
    script: tuple[Step, ...] = ()
    timeout: float | None = None
    stall_timeout: float | None = None
    max_turns: int | None = None
    fix_timeouts: bool = False
    """Also treat timeouts and stalls as blockers a fixer may try (off: they just fail)."""
    env: tuple[tuple[str, str], ...] | None = None
    pass_env: tuple[str, ...] | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    budget_usd: float | None = None
    """Each fixer's own cap on model spend."""
    base: Task = field(default_factory=lambda: Task("build"))
    """What ``defaults:`` gives a task: where the build's fixer starts from."""


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    tasks: tuple[Task, ...]
    workspace: Path = Path(".")
    create_workspace: bool = False
    """Create ``workspace`` when it does not exist (else that is an error: a typo, likely)."""
    notify: Notify = field(default_factory=Notify)
    source: Path | None = None
    limits: Limits = field(default_factory=Limits)
    build: Build = field(default_factory=Build)
    fixer: FixerSpec = field(default_factory=FixerSpec)
    batches: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(batch name, task ids) in order, when the plan was written with ``batches``."""
    prices: tuple[tuple[str, Price], ...] = ()
    form: Literal["tasks", "batches"] = "tasks"
    presets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Per-preset argv templates that replace the built-in ones (preset name, argv)."""
    executor: Literal["local", "ray"] = "local"
    """Where agents run: this machine, or the nodes of a Ray cluster (the ``ray`` extra)."""
    address: str = "auto"
    """The Ray cluster's address (``auto``: the one started on this machine)."""
    isolation: Literal["auto", "worktree", "none"] = "auto"
    """``auto``/``worktree``: each writing agent in a checkout of its own (a shadow repository
    when the workspace is not a git repository); ``none``: everyone in the workspace."""
    deliver: Literal["branch", "apply"] | None = None
    """How the integrated work reaches the user (None: ``branch`` in a git repository,
    ``apply`` for a folder that is not one)."""
    sandbox: SandboxSpec = field(default_factory=SandboxSpec)

    @property
    def sandbox_mode(self) -> SandboxMode:
        """The sandbox mode in force: the plan's, else ``required`` when an agent uses a model."""
        if self.sandbox.mode is not None:
            return self.sandbox.mode
        kinds = {t.agent for t in self.tasks} | {self.fixer.agent or ""}
        return "required" if kinds & (PRESETS | {"claude"}) else "best-effort"

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}

    def adding(self, task: Task) -> Plan:
        """This plan with ``task`` added at its end (a task added while the run goes on)."""
        return replace(self, tasks=(*self.tasks, task))
