"""B16: the Ray executor. The same DAG of command agents on this machine and on a two-node
Ray cluster on this same machine (`bench.raycluster`), side by side in one run.

Figures: makespan over the critical path (the DAG's sleeps, computed exactly from its seeded
durations; with 32 agents at once the floor is the total work over 32 when that is longer),
and per-task overhead: wall time and the driver's own CPU per task for a batch
of ``true`` commands (nothing to wait for but the orchestration), the same batch's wall time
in a workspace of `WORKSPACE_FILES` files (the other runs' workspace is empty; a node checks
the workspace out for its attempts, a local run works in it), and the driver's CPU per
event its agents sent. Both nodes share this machine's 2 cores with the driver, so the
cluster figures are an upper bound of what a node costs; `docs/cluster.md` turns them into
an estimate for 100 nodes.

Goals (ratios to the local run measured in the same sitting): the DAG's makespan on the
cluster at most `GOAL_MAKESPAN` times the local one, and the driver's CPU per task and per
agent event at most `GOAL_DRIVER_CPU` times the local one.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, ms, secs, times
from bench.workloads import Outcome, cleanup, random_dag, run_orchestrator, wide_limits
from orchestrator.plan.graph import critical_path_length
from orchestrator.plan.model import Task

CONCURRENCY = 32
"""Agents at once in both setups (the cluster's hosts split them between the nodes)."""
GOAL_MAKESPAN = 2.0
GOAL_DRIVER_CPU = 2.0


def command_tasks(
    graph: dict[str, tuple[str, ...]], durations: dict[str, float]
) -> tuple[Task, ...]:
    return tuple(
        Task(tid, agent="command", command=("sleep", f"{durations[tid]:.3f}"), depends_on=deps)
        for tid, deps in graph.items()
    )


IDLE_AGENTS = 32
IDLE_SECONDS = 5.0


def idle_tasks() -> tuple[Task, ...]:
    """Agents that only wait: what the driver spends on an agent that says nothing."""
    return tuple(
        Task(f"i{i}", agent="command", command=("sleep", str(IDLE_SECONDS)))
        for i in range(IDLE_AGENTS)
    )


def true_tasks(n: int) -> tuple[Task, ...]:
    return tuple(Task(f"t{i}", agent="command", command=("true",)) for i in range(n))


def events_of(out: Outcome) -> int:
    return sum(sum(1 for _ in path.open("rb")) for path in out.responses.glob("*.events.jsonl"))


WORKSPACE_FILES = 500
"""Files in the workspace of the second `true` batch: what a node's checkout costs."""


def filled_workspace(tmp: Path, files: int) -> Path:
    """A workspace of ``files`` small source files in 10 folders (about 40 KB)."""
    ws = tmp / f"workspace-{files}"
    for i in range(files):
        path = ws / f"pkg{i % 10}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 8)
    return ws


async def timed(
    tasks: tuple[Task, ...], cfg: Config, cluster: str | None, workspace: Path | None = None
) -> dict[str, Any]:
    limits = wide_limits(len(tasks), max_concurrency=CONCURRENCY)
    cpu = time.process_time()
    out = await run_orchestrator(
        tasks, tmp=cfg.tmp, limits=limits, cluster=cluster, workspace=workspace
    )
    cpu = time.process_time() - cpu
    events = events_of(out)
    cleanup(out.responses)
    return {"wall": out.wall, "cpu": cpu, "events": events}


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B16", "Ray executor: local vs two-node local cluster")
    if importlib.util.find_spec("ray") is None:
        fig.row("skipped", measured="the ray extra is not installed", note="pip install '.[ray]'")
        return {"B16": fig}
    from bench.raycluster import start_cluster

    work = random_dag(cfg.pick(2000, 200), seed=cfg.seed, scale=cfg.pick(1.0, 0.5))
    cp = critical_path_length(work.graph, work.durations)
    floor = max(cp, sum(work.durations.values()) / CONCURRENCY)  # no schedule beats this
    dag = command_tasks(dict(work.graph), work.durations)
    trues = true_tasks(cfg.pick(400, 60))
    files = cfg.pick(WORKSPACE_FILES, 50)
    filled = filled_workspace(cfg.tmp, files)
    cluster = start_cluster()
    data: dict[str, Any] = {
        "tasks": len(dag), "critical_path": cp, "floor": floor, "concurrency": CONCURRENCY,
    }  # fmt: skip
    try:
        for name, address in (("local", None), ("cluster", cluster.address)):
            runs = [await timed(dag, cfg, address) for _ in range(cfg.repeats)]
            over = [await timed(trues, cfg, address) for _ in range(cfg.repeats)]
            full = [await timed(trues, cfg, address, filled) for _ in range(cfg.repeats)]
            idle = [await timed(idle_tasks(), cfg, address) for _ in range(cfg.repeats)]
            data[name] = {"dag": runs, "true": over, "true_files": full, "idle": idle}
    finally:
        cluster.stop()
        cleanup(filled)
    local, remote = data["local"], data["cluster"]

    def both(runs: str, value: Callable[[dict[str, Any]], float]) -> tuple[Stat, Stat]:
        """``value`` of each of the ``runs`` measured, locally and on the cluster."""
        return Stat.of(map(value, local[runs])), Stat.of(map(value, remote[runs]))

    mk_local, mk_remote = both("dag", lambda r: r["wall"] / cp)
    ratio = mk_remote.median / mk_local.median
    fig.row(
        f"{len(dag):,}-task DAG of command agents, makespan / critical path",
        measured=f"cluster {mk_remote.fmt(times)}",
        baseline=f"local {mk_local.fmt(times)}; cp {secs(cp)}; floor {times(floor / cp)}",
        ratio=times(ratio),
        goal=f"<= {GOAL_MAKESPAN:g}x local",
        met=ratio <= GOAL_MAKESPAN,
    )
    n = len(trues)
    for what, key in (("wall per task", "wall"), ("driver CPU per task", "cpu")):
        loc, rem = both("true", lambda r: r[key] / n)  # noqa: B023 - called at once
        ratio = rem.median / loc.median
        fig.row(
            f"{n} `true` commands, {what}",
            measured=f"cluster {rem.fmt(ms)}",
            baseline=f"local {loc.fmt(ms)}",
            ratio=times(ratio),
            goal=f"<= {GOAL_DRIVER_CPU:g}x local" if key == "cpu" else "-",
            met=ratio <= GOAL_DRIVER_CPU if key == "cpu" else None,
        )
    loc, rem = both("true_files", lambda r: r["wall"] / n)
    fig.row(
        f"{n} `true` commands in a {files}-file workspace, wall per task",
        measured=f"cluster {rem.fmt(ms)}",
        baseline=f"local {loc.fmt(ms)}",
        ratio=times(rem.median / loc.median),
        note="each attempt on a node has a checkout of the workspace; a local one has none",
    )
    local_event, per_event = both("dag", lambda r: r["cpu"] / max(r["events"], 1))
    ratio = per_event.median / local_event.median
    fig.row(
        "driver CPU per agent event, all of it (the DAG runs)",
        measured=f"cluster {per_event.fmt(ms)}",
        baseline=f"local {local_event.fmt(ms)}",
        ratio=times(ratio),
        goal=f"<= {GOAL_DRIVER_CPU:g}x local",
        met=ratio <= GOAL_DRIVER_CPU,
        note=f"{remote['dag'][0]['events']:,} events per run",
    )
    agent_seconds = IDLE_AGENTS * IDLE_SECONDS
    loc, rem = both("idle", lambda r: r["cpu"] / agent_seconds)
    fig.row(
        f"{IDLE_AGENTS} agents waiting {IDLE_SECONDS:g} s: driver CPU per agent-second",
        measured=f"cluster {rem.fmt(ms)}",
        baseline=f"local {loc.fmt(ms)}",
        ratio=times(rem.median / loc.median),
    )
    fig.data = json.loads(json.dumps(data))
    return {"B16": fig}


if __name__ == "__main__":  # python -m bench.remote: this figure alone, quick size
    import asyncio
    import tempfile

    config = Config(quick=True, repeats=1, seed=8, tmp=Path(tempfile.mkdtemp()))
    for row in asyncio.run(measure(config, {"B16"}))["B16"].rows:
        print(row)
