"""B1 (makespan over the critical path) and B3 (start delay), measured on the same runs.

B1: each DAG runs in ``--mode async`` (repeated), once in ``--mode batch`` and once on a bare
asyncio ready-queue; the critical path, computed exactly from the seeded durations, is the
floor. B3: for every task with dependencies, the time from its last dependency's end
(``AgentRecord.ended``, set when the scheduler learns the dependency succeeded) to its agent
really running (the ``t`` of the first event in its sidecar, written by the agent's first
step), and, for reference, to the scheduler's decision (``AgentRecord.started``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, ms, percentile, secs, times, tmpfs_dir
from bench.overhead import file_floor
from bench.workloads import (
    Outcome,
    Workload,
    cleanup,
    independent,
    layered,
    list_schedule,
    random_dag,
    run_bare,
    run_orchestrator,
    sleep_tasks,
    wide_limits,
)
from orchestrator.plan.graph import critical_path_length

B1_GOAL = 1.02
B1_GOAL_LARGE = 1.05
B3_P50 = 0.0001
B3_P99 = {"small": 0.005, "large": 0.025}


def workloads(cfg: Config, *, only_random: bool) -> list[tuple[str, Workload]]:
    """(size class, workload): 'large' is the 20,000-task DAG (2,000 in --quick)."""
    scale = cfg.pick(1.0, 0.1)
    seed = cfg.seed
    out: list[tuple[str, Workload]] = []
    if not only_random:
        out.append(("", independent(cfg.pick(1000, 100), seed=seed, scale=scale)))
        out.append(("", layered(cfg.pick(10, 4), cfg.pick(100, 25), seed=seed, scale=scale)))
    out.append(("small", random_dag(cfg.pick(2000, 200), seed=seed, scale=scale)))
    out.append(("large", random_dag(cfg.pick(20000, 400), seed=seed, scale=scale)))
    return out


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    b1 = Figure("B1", "makespan over critical path")
    b3 = Figure("B3", "start delay: last dependency succeeded -> agent running")
    places: list[tuple[str, Path]] = [("", cfg.tmp)]
    shm = tmpfs_dir()
    if shm is not None:  # the same runs with the file system out of the measurement
        places.append(("tmpfs", shm))
    try:
        for size, work in workloads(cfg, only_random="B1" not in want):
            if "B1" in want:
                b1.data[work.name] = baselines(cfg, work)
            for place, where in places:
                await _measure_at(cfg, want, b1, b3, size, work, place, where)
    finally:
        for _, where in places[1:]:
            cleanup(where)
    return {k: f for k, f in (("B1", b1), ("B3", b3)) if k in want}


def baselines(cfg: Config, work: Workload) -> dict[str, Any]:
    """The critical path, and the same tasks' files created and appended as plain os calls
    in the scratch dir, one after the other (what the writer thread cannot go below)."""
    n = len(work)
    floor = file_floor(cfg.tmp / f"floor-{n}", n)
    return {"tasks": n, "critical_path": critical_path_length(work.graph, work.durations),
            "file_floor": floor.total * n, "start_cost": floor.starts}  # fmt: skip


def serial_starts(work: Workload, where: Path, start_cost: float | None = None) -> float:
    """The makespan if nothing cost anything but every agent's start record and files,
    created one agent after another in the order the agents start (as the run's writer
    thread does, each agent acting once its own are done) at the file floor's cost in
    ``where`` (measured there unless ``start_cost`` is given)."""
    if start_cost is None:
        start_cost = file_floor(where / f"floor-{len(work)}", len(work)).starts
    return list_schedule(work.graph, work.durations, start_cost=start_cost)


async def _measure_at(
    cfg: Config,
    want: set[str],
    b1: Figure,
    b3: Figure,
    size: str,
    work: Workload,
    place: str,
    where: Path,
) -> None:
    n = len(work)
    cp = critical_path_length(work.graph, work.durations)
    tasks = sleep_tasks(work)
    runs: list[float] = []
    delays: list[dict[str, Any]] = []
    # The 20,000-task DAG runs once: it is the slowest run of the suite by far.
    for _ in range(1 if size == "large" and not cfg.quick else cfg.repeats):
        out = await run_orchestrator(tasks, tmp=where, limits=wide_limits(n))
        runs.append(out.wall)
        if size and "B3" in want:
            delays.append(start_delays(out, work))
        cleanup(out.responses)
        del out
    suffix = f", files in {place}" if place else ""
    if "B1" in want:
        async_ = Stat.of(r / cp for r in runs)
        entry = b1.data[work.name]
        entry[f"async_makespan{suffix}"] = Stat.of(runs).as_json()
        entry[f"async_over_cp{suffix}"] = async_.as_json()
        cost = None if place else entry["start_cost"]
        serial = serial_starts(work, where, cost) / cp
        entry[f"serial_starts_over_cp{suffix}"] = serial
        if place:
            baseline = f"cp {secs(cp)}; serial starts {times(serial)} cp"
        else:
            batch_out = await run_orchestrator(
                tasks, tmp=where, limits=wide_limits(n), mode="batch"
            )
            batch = batch_out.wall
            cleanup(batch_out.responses)
            del batch_out
            bare = await run_bare(work.graph, work.durations)
            entry.update(batch_makespan=batch, batch_over_cp=batch / cp, bare_makespan=bare)
            floor = entry["file_floor"]
            baseline = (
                f"cp {secs(cp)}; batch {times(batch / cp)}; bare {times(bare / cp)}; "
                f"file floor {secs(floor)} ({times(floor / cp)} cp); "
                f"serial starts {times(serial)} cp"
            )
        goal = B1_GOAL_LARGE if size == "large" else B1_GOAL
        b1.row(
            work.name + suffix,
            measured=f"async {Stat.of(runs).fmt(secs)}",
            baseline=baseline,
            ratio=async_.fmt(times),
            goal=f"<= {goal:g}x cp",
            met=async_.median <= goal,
            note="" if place else FLOOR_NOTE,
        )
    if delays:
        add_delay_rows(b3, work, size, delays, suffix)


FLOOR_NOTE = (
    "file floor: every task's progress-file creates and appends and journal lines as plain os "
    "calls one after the other in the scratch dir, as B2's; serial starts: the makespan if "
    "nothing cost anything but each agent's start record and files, created at the file floor's "
    "cost one agent after another in start order (the writer thread's; an agent acts once its "
    "own are done), over cp, in the row's place"
)


def start_delays(out: Outcome, work: Workload) -> dict[str, Any]:
    """Per task with dependencies: seconds from its last dependency's end to its start."""
    agents = out.run.agents
    running: list[float] = []
    scheduled: list[float] = []
    for tid, deps in work.graph.items():
        if not deps:
            continue
        ready = max(agents[d].ended or 0.0 for d in deps)
        rec = agents[tid]
        assert rec.started is not None
        scheduled.append(rec.started - ready)
        running.append(first_event_time(out.responses / f"{tid}.events.jsonl") - ready)
    return {"running": running, "scheduled": scheduled}


def first_event_time(sidecar: Path) -> float:
    with open(sidecar, "rb") as fh:
        return float(json.loads(fh.readline())["t"])


def add_delay_rows(
    fig: Figure, work: Workload, size: str, runs: list[dict[str, Any]], suffix: str = ""
) -> None:
    n = len(work)
    data: dict[str, Any] = {"tasks": n}
    for q, goal in ((50, B3_P50), (99, B3_P99[size])):
        run_p = Stat.of(percentile(r["running"], q) for r in runs)
        sched_p = Stat.of(percentile(r["scheduled"], q) for r in runs)
        data[f"p{q}_running"] = run_p.as_json()
        data[f"p{q}_scheduled"] = sched_p.as_json()
        fig.row(
            f"p{q} at {n:,} tasks{suffix}",
            measured=run_p.fmt(ms),
            baseline="-",
            ratio="-",
            goal=f"<= {ms(goal)}",
            met=run_p.median <= goal,
            note=f"scheduler decision alone: {sched_p.fmt(ms)}",
        )
    worst = max(max(r["running"]) for r in runs)
    data["max_running"] = worst
    fig.data[work.name + suffix] = data
