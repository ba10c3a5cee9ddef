"""B6: progress throughput. 100 command agents print as fast as they can; lines/s into files.

Each agent runs ``seq -f FORMAT N`` (C, so the producer is never the bottleneck): the
orchestrator reads the pipes, cleans and stamps each line, writes the ``.md`` and the
``.events.jsonl`` sidecar. The baseline is bare asyncio doing the least that puts the same
lines into files: the same 100 processes, ``StreamReader`` lines, buffered plain writes.
Both sides run with a loop-lag ticker (every 5 ms) measuring how late the loop answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.core import Config, Figure, LagProbe, Stat, ms, rate, times
from bench.workloads import cleanup, run_orchestrator, wide_limits
from orchestrator.plan.model import Task

FORMAT = "flood %g: the quick brown fox jumps over the lazy dog, again and again"
GOAL_RATIO = 0.5
GOAL_LAG = 0.100


def argv(lines: int) -> tuple[str, ...]:
    return ("seq", "-f", FORMAT, str(lines))


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B6", "progress throughput")
    agents = cfg.pick(100, 50)
    per_agent = cfg.pick(1500, 400)
    total = per_agent * agents
    orch: list[float] = []
    orch_lag: list[float] = []
    bare: list[float] = []
    bare_lag: list[float] = []
    counted: list[int] = []
    for i in range(cfg.repeats):
        wall, lag, n = await flood_orchestrator(cfg.tmp, agents, per_agent)
        orch.append(total / wall)
        orch_lag.append(lag)
        counted.append(n)
        wall, lag = await flood_bare(cfg.tmp / f"bare-{i}", agents, per_agent)
        bare.append(total / wall)
        bare_lag.append(lag)
    o, b = Stat.of(orch), Stat.of(bare)
    ratio = Stat.of(x / y for x, y in zip(orch, bare, strict=True))
    lag_p99 = Stat.of(orch_lag)
    fig.row(
        f"{agents} agents x {per_agent:,} lines",
        measured=f"{o.fmt(rate)} lines",
        baseline=f"bare pipe->file {b.fmt(rate)}",
        ratio=ratio.fmt(times),
        goal=f">= {GOAL_RATIO:g}x bare",
        met=ratio.median >= GOAL_RATIO,
        note=f"lines found in the .md files: {min(counted):,} of {total:,} expected",
    )
    fig.row(
        "event-loop lag p99 while flooding",
        measured=lag_p99.fmt(ms),
        baseline=f"bare {Stat.of(bare_lag).fmt(ms)}",
        goal=f"<= {ms(GOAL_LAG)}",
        met=lag_p99.median <= GOAL_LAG,
    )
    fig.data = {
        "agents": agents,
        "lines_per_agent": per_agent,
        "orchestrator_lines_per_s": o.as_json(),
        "bare_lines_per_s": b.as_json(),
        "ratio": ratio.as_json(),
        "lag_p99": lag_p99.as_json(),
        "bare_lag_p99": Stat.of(bare_lag).as_json(),
        "lines_found": counted,
    }
    return {"B6": fig}


async def flood_orchestrator(tmp: Path, agents: int, lines: int) -> tuple[float, float, int]:
    """(wall seconds, lag p99, output lines found in the progress files)."""
    tasks = tuple(Task(f"f{i}", agent="command", command=argv(lines)) for i in range(agents))
    async with LagProbe() as probe:
        out = await run_orchestrator(tasks, tmp=tmp, limits=wide_limits(agents))
    found = sum(count_output_lines(out.responses / f"{t.id}.md") for t in tasks)
    cleanup(out.responses)
    return out.wall, probe.p(99), found


def count_output_lines(md: Path) -> int:
    with open(md, "rb") as fh:
        return fh.read().count(b"] | flood ")


async def flood_bare(directory: Path, agents: int, lines: int) -> tuple[float, float]:
    """The same processes, their lines read with StreamReader and written with plain writes."""
    directory.mkdir(parents=True)  # noqa: ASYNC240 - before anything runs; nothing to stall

    async def one(i: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv(lines),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        # Plain blocking writes in the loop, as the progress writer does (measured in B6).
        with open(directory / f"f{i}.log", "wb") as out:  # noqa: ASYNC230
            async for line in proc.stdout:
                out.write(line)
        await proc.wait()

    async with LagProbe() as probe:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(agents):
                tg.create_task(one(i))
        wall = time.perf_counter() - t0
    cleanup(directory)
    return wall, probe.p(99)
