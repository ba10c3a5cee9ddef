"""Seeded workloads and the two ways to run them: the orchestrator in-process, and bare asyncio.

A workload is a graph (task id -> the ids it depends on) with a duration per task; every
task's work is an ``asyncio.sleep`` of that duration (a scripted agent with one ``Sleep``
step). Durations are heavy-tailed: most around 0.1 s, about 7% stragglers around 0.9 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import math
import random
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.agents.pool import AgentPool
from orchestrator.cluster import remote_agents
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import AgentRecord, RunSettings
from orchestrator.events import AgentEvent
from orchestrator.plan.graph import dependents_of
from orchestrator.plan.model import Limits, Plan, Sleep, Task
from orchestrator.records.journal import Journal
from orchestrator.sandbox.confinement import Confinement

Graph = dict[str, tuple[str, ...]]
STRAGGLERS = 0.07


@dataclass(frozen=True)
class Workload:
    name: str
    graph: Graph
    durations: dict[str, float]

    def __len__(self) -> int:
        return len(self.graph)


def heavy_tailed(rng: random.Random, scale: float = 1.0) -> float:
    """~93% around 0.1 s (lognormal, sigma 0.3), ~7% stragglers around 0.9 s."""
    if rng.random() < STRAGGLERS:
        return scale * 0.9 * math.exp(rng.gauss(0.0, 0.1))
    return scale * 0.1 * math.exp(rng.gauss(0.0, 0.3))


def _timed(name: str, graph: Graph, rng: random.Random, scale: float) -> Workload:
    return Workload(name, graph, {tid: heavy_tailed(rng, scale) for tid in graph})


def independent(n: int, *, seed: int, scale: float = 1.0) -> Workload:
    rng = random.Random(f"independent-{n}-{seed}")
    graph: Graph = {f"t{i}": () for i in range(n)}
    return _timed(f"{n:,} independent", graph, rng, scale)


def layered(layers: int, width: int, *, seed: int, scale: float = 1.0) -> Workload:
    """``layers`` x ``width``; each task past the first layer has 2-3 deps in the layer before."""
    rng = random.Random(f"layered-{layers}-{width}-{seed}")
    graph: Graph = {}
    for layer in range(layers):
        for i in range(width):
            deps: tuple[str, ...] = ()
            if layer:
                picks = rng.sample(range(width), min(rng.choice((2, 3)), width))
                deps = tuple(f"l{layer - 1}-{j}" for j in picks)
            graph[f"l{layer}-{i}"] = deps
    return _timed(f"{layers} layers x {width}", graph, rng, scale)


def random_dag(n: int, *, seed: int, scale: float = 1.0) -> Workload:
    """Tasks in a random topological order; each picks 0-3 deps uniformly among earlier ones."""
    rng = random.Random(f"random-dag-{n}-{seed}")
    graph: Graph = {}
    ids: list[str] = []
    for i in range(n):
        k = min(rng.choice((0, 1, 2, 3)), i)
        deps = tuple(ids[j] for j in rng.sample(range(i), k)) if k else ()
        tid = f"r{i}"
        graph[tid] = deps
        ids.append(tid)
    return _timed(f"{n:,}-task random DAG", graph, rng, scale)


def list_schedule(
    graph: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
    slots: int | None = None,
    *,
    start_cost: float = 0.0,
) -> float:
    """The makespan of list scheduling with no overhead: ready tasks start in plan order when
    a slot frees (at once when ``slots`` is None).

    With ``start_cost`` each start first takes that long on one serial resource, in start
    order: what a run's writer thread does before an agent may act (its start record and its
    files created, one agent after another), so the k-th start of a burst acts k times it
    after the burst began, and nothing else costs anything."""
    order = {tid: i for i, tid in enumerate(graph)}
    ids = list(graph)
    children: dict[str, list[str]] = {t: [] for t in graph}
    for tid, deps in graph.items():
        for dep in deps:
            children[dep].append(tid)
    waiting = {t: len(d) for t, d in graph.items()}
    ready = [order[t] for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    limit = slots if slots is not None else len(graph)
    running: list[tuple[float, str]] = []
    now = free = 0.0
    while ready or running:
        while ready and len(running) < limit:
            tid = ids[heapq.heappop(ready)]
            free = max(now, free) + start_cost
            heapq.heappush(running, (free + durations[tid], tid))
        now, done = heapq.heappop(running)
        for child in children[done]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, order[child])
    return now


def sleep_tasks(work: Workload) -> tuple[Task, ...]:
    return tuple(
        Task(tid, agent="scripted", script=(Sleep(work.durations[tid]),), depends_on=deps)
        for tid, deps in work.graph.items()
    )


def wide_limits(n: int, **overrides: float) -> Limits:
    """Limits that never hold a start back: every task may run at once, at any rate."""
    fields: dict[str, float] = {
        "max_concurrency": max(n, 1),
        "max_agents": n * 2 + 10,
        "spawn_rate": 1e9,
        "grace": 1.0,
    }
    fields.update(overrides)
    return Limits(**fields)  # type: ignore[arg-type]


# --- running the orchestrator in-process --------------------------------------------------------


@dataclass
class Outcome:
    """One finished in-process run; ``run`` is kept for its records (started/ended)."""

    run: Run
    wall: float
    """Seconds from ``execute()`` being awaited to its return."""
    responses: Path
    journal_records: int


async def run_orchestrator(
    tasks: Sequence[Task],
    *,
    tmp: Path,
    limits: Limits,
    mode: Literal["async", "batch"] = "async",
    journal: bool = True,
    journal_factory: Callable[[Path], Journal] | None = None,
    during: Callable[[Run], None] | None = None,
    around: Callable[[Path], AbstractAsyncContextManager[object]] | None = None,
    cluster: str | None = None,
    drive: Callable[[Run], Awaitable[None]] | None = None,
    on_event: Callable[[AgentRecord, str, AgentEvent | None], None] | None = None,
    sandbox: Confinement | None = None,
    workspace: Path | None = None,
) -> Outcome:
    """Run ``tasks`` as the CLI would (progress files, sidecars, journal) but in this process.

    ``during`` is called once the run object exists and before it executes (to attach probes);
    ``around(responses)`` is entered before the run starts and left after it ended;
    ``drive(run)`` runs it instead of ``run.execute()`` (a view around it); ``on_event`` is
    told every event line as the CLI's plain printer is; with ``cluster`` (a Ray address) the
    agents run on that cluster's nodes (``run --cluster``); with ``sandbox`` every agent
    process is confined by it (the CLI's default is in `orchestrator.sandbox.decision`);
    ``workspace``: the plan's (default: an empty directory in ``tmp``).
    """
    responses = tmp / f"responses-{uuid.uuid4().hex[:8]}"
    (responses / ".run").mkdir(parents=True)
    if workspace is None:
        workspace = tmp / "workspace"
        workspace.mkdir(exist_ok=True)
    plan = Plan("bench", tuple(tasks), workspace=workspace, limits=limits)
    settings = RunSettings(
        responses=responses, run_id=f"bench-{uuid.uuid4().hex[:12]}", mode=mode, sandbox=sandbox
    )
    jpath = responses / ".run" / "journal.jsonl"
    jr: Journal | None = None
    if journal:
        jr = journal_factory(jpath) if journal_factory else Journal(jpath, fresh=True)
    pool = AgentPool(plan)
    spread = remote_agents(plan, pool, cluster, settings.run_id, responses)
    remote = spread.cluster if spread is not None else None
    agents = spread if spread is not None else pool
    run = Run(plan, settings, agents=agents, journal=jr, on_event=on_event)
    if during is not None:
        during(run)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if remote is not None:
                await stack.enter_async_context(remote.session())
            async with around(responses) if around else contextlib.nullcontext():
                t0 = time.perf_counter()
                await (drive(run) if drive is not None else run.execute())
                wall = time.perf_counter() - t0
    finally:
        await pool.aclose()
        if jr is not None:
            jr.close()
    failed = [t for t, r in run.tasks.items() if r.state != "succeeded"]
    if failed:
        why = run.tasks[failed[0]].reason
        raise RuntimeError(f"{len(failed)} tasks did not succeed, e.g. {failed[0]}: {why}")
    return Outcome(run, wall, responses, jr.records if jr else 0)


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    gc.collect()


# --- the bare asyncio baseline ------------------------------------------------------------------


async def run_bare(graph: Mapping[str, Sequence[str]], durations: Mapping[str, float]) -> float:
    """A bare asyncio ready-queue: a task per node in one TaskGroup, each started the moment
    its last dependency finished; returns the wall time. No files, no journal, no limits."""
    children = dependents_of(graph)
    waiting = {tid: len(deps) for tid, deps in graph.items()}

    async with asyncio.TaskGroup() as tg:

        async def work(tid: str) -> None:
            seconds = durations[tid]
            if seconds:
                await asyncio.sleep(seconds)
            for child in children[tid]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    tg.create_task(work(child))

        t0 = time.perf_counter()
        for tid, n in waiting.items():
            if n == 0:
                tg.create_task(work(tid))
    return time.perf_counter() - t0
