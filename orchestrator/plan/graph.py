"""The task graph as plain functions: ready sets, cycles, waves, critical paths, a summary.

A graph maps each task id to the ids it depends on. Pure: testable without files or a loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from orchestrator.plan.model import Plan, Task

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
    builds = (1 + 2 * plan.build.max_fix_cycles) if plan.build.command else 0
    uncapped = len(plan.tasks) * per_task + builds
    return PlanSummary(
        tasks=len(plan.tasks),
        waves=len(levels),
        critical_path=len(critical_path(graph)),
        widest_wave=max((len(w) for w in levels), default=0),
        kinds=tuple(sorted(kinds.items())),
        most_agents=min(uncapped, plan.limits.max_agents),
    )
