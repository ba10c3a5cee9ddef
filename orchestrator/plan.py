"""Plan and Task models (frozen) and pure graph helpers over them.

Loading and validating plan files lives in `planfile`; everything here is plain data and
plain functions, testable without files or an event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

AGENT_KINDS: frozenset[str] = frozenset({"claude", "command", "scripted"})
PRESETS: frozenset[str] = frozenset({"claude-code", "codex", "aider"})


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
    """The default: a current model (DESIGN.md's example, claude-sonnet-4-5, is deprecated)."""
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


@dataclass(frozen=True, slots=True)
class Build:
    commands: tuple[str, ...] = ()
    timeout: float = 10 * 60.0
    max_fix_cycles: int = 2
    after: tuple[str, ...] = ()
    """Task ids or batch names after which the build also runs (it always runs at the end)."""


@dataclass(frozen=True, slots=True)
class FixerSpec:
    """How fixer agents are made; the same keys as a task, all optional."""

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


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    tasks: tuple[Task, ...]
    workspace: Path = Path(".")
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

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}


# --- graph helpers (pure) -------------------------------------------------------------------

Graph: TypeAlias = Mapping[str, Sequence[str]]
"""task id -> the ids it depends on."""


def graph_of(tasks: Iterable[Task]) -> dict[str, tuple[str, ...]]:
    return {t.id: t.depends_on for t in tasks}


def dependents_of(graph: Graph) -> dict[str, list[str]]:
    """task id -> the ids that depend on it (the reverse edges)."""
    out: dict[str, list[str]] = {tid: [] for tid in graph}
    for tid, deps in graph.items():
        for dep in deps:
            out.setdefault(dep, []).append(tid)
    return out


def ready_set(graph: Graph, done: Iterable[str], started: Iterable[str] = ()) -> list[str]:
    """Ids not yet started whose dependencies are all in ``done``, in graph order."""
    done_set, started_set = set(done), set(started)
    return [
        tid
        for tid, deps in graph.items()
        if tid not in done_set and tid not in started_set and all(d in done_set for d in deps)
    ]


def find_cycle(graph: Graph) -> list[str] | None:
    """One dependency cycle as ``[a, b, c, a]`` (a depends on b ...), or None; iterative DFS."""
    color: dict[str, int] = {}
    for root in graph:
        if color.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[node] = 1
                path.append(node)
            deps = [d for d in graph.get(node, ()) if d in graph]
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if color.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not color.get(nxt):
                    stack.append((nxt, 0))
            else:
                color[node] = 2
                path.pop()
    return None


def waves(graph: Graph) -> list[list[str]]:
    """Topological levels: wave k holds the ids whose longest dependency chain has k links.

    Raises ValueError on a cycle (validation reports cycles before this is called).
    """
    indegree = {tid: 0 for tid in graph}
    for tid, deps in graph.items():
        indegree[tid] = len(deps)
    children = dependents_of(graph)
    current = [tid for tid, n in indegree.items() if n == 0]
    out: list[list[str]] = []
    seen = 0
    while current:
        out.append(current)
        seen += len(current)
        nxt: list[str] = []
        for tid in current:
            for child in children.get(tid, ()):
                indegree[child] -= 1
                if indegree[child] == 0:
                    nxt.append(child)
        current = nxt
    if seen != len(graph):
        raise ValueError("the graph has a cycle")
    return out


def max_width(graph: Graph) -> int:
    return max((len(w) for w in waves(graph)), default=0)


def critical_path(graph: Graph, durations: Mapping[str, float] | None = None) -> list[str]:
    """The longest chain (by summed duration, or by task count without durations), root first."""
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for wave in waves(graph):
        for tid in wave:
            weight = 1.0 if durations is None else durations[tid]
            deps = graph[tid]
            if deps:
                parent = max(deps, key=lambda d: best[d])
                best[tid], prev[tid] = best[parent] + weight, parent
            else:
                best[tid], prev[tid] = weight, None
    if not best:
        return []
    node: str | None = max(best, key=lambda t: best[t])
    chain: list[str] = []
    while node is not None:
        chain.append(node)
        node = prev[node]
    return chain[::-1]


def critical_path_length(graph: Graph, durations: Mapping[str, float]) -> float:
    return sum(durations[t] for t in critical_path(graph, durations))


def descendants(graph: Graph, roots: Iterable[str]) -> set[str]:
    """Every id that depends, directly or not, on one of ``roots`` (roots excluded)."""
    children = dependents_of(graph)
    out: set[str] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@dataclass(frozen=True, slots=True)
class PlanSummary:
    tasks: int
    waves: int
    critical_path: int
    widest_wave: int
    kinds: tuple[tuple[str, int], ...]
    most_agents: int
    """Every agent the run could start (attempts, fixers, builds), capped by max_agents."""


def describe(plan: Plan) -> PlanSummary:
    graph = graph_of(plan.tasks)
    levels = waves(graph)
    kinds: dict[str, int] = {}
    for task in plan.tasks:
        kinds[task.agent] = kinds.get(task.agent, 0) + 1
    fix_rounds = max(plan.limits.max_depth, 0)
    per_task = 1 + 2 * fix_rounds  # the first attempt, then a fixer and a retry per round
    builds = (1 + 2 * plan.build.max_fix_cycles) if plan.build.commands else 0
    uncapped = len(plan.tasks) * per_task + builds
    return PlanSummary(
        tasks=len(plan.tasks),
        waves=len(levels),
        critical_path=len(critical_path(graph)),
        widest_wave=max((len(w) for w in levels), default=0),
        kinds=tuple(sorted(kinds.items())),
        most_agents=min(uncapped, plan.limits.max_agents),
    )
