"""B7: subprocess agents. What starting, reading and reaping a ``true`` costs per agent.

The orchestrator runs 1,000 command agents ``true`` (each in its own process group, with
the parent-death signal, progress files and journal); the baseline is bare
``asyncio.create_subprocess_exec("true")`` with its output piped and read to the end. Both
keep the same number of children alive at once.
"""

from __future__ import annotations

import asyncio
import shutil
import time

from bench.core import Config, Figure, Stat, times, us
from bench.workloads import cleanup, run_orchestrator, wide_limits
from orchestrator.plan.model import Task

GOAL = 1.2
CONCURRENCY = 16


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B7", "subprocess spawn overhead")
    n = cfg.pick(1000, 100)
    program = shutil.which("true") or "/bin/true"
    tasks = tuple(Task(f"p{i}", agent="command", command=(program,)) for i in range(n))
    limits = wide_limits(n, max_concurrency=CONCURRENCY)
    setpriv = shutil.which("setpriv")
    orch: list[float] = []
    bare: list[float] = []
    bare_setpriv: list[float] = []
    for _ in range(cfg.repeats):
        out = await run_orchestrator(tasks, tmp=cfg.tmp, limits=limits)
        orch.append(out.wall / n)
        cleanup(out.responses)
        bare.append(await spawn_bare([program], n) / n)
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", program]
            bare_setpriv.append(await spawn_bare(argv, n) / n)
    o, b = Stat.of(orch), Stat.of(bare)
    ratio = Stat.of(x / y for x, y in zip(orch, bare, strict=True))
    if bare_setpriv:
        death = (
            f"parent-death signal through setpriv: bare + setpriv "
            f"{Stat.of(bare_setpriv).fmt(us)}/spawn"
        )
    else:
        death = "parent-death signal through prctl in a preexec_fn (forces fork)"
    fig.row(
        f"{n:,} `true` agents, {CONCURRENCY} at a time",
        measured=f"{o.fmt(us)}/agent",
        baseline=f"bare {b.fmt(us)}/spawn",
        ratio=ratio.fmt(times),
        goal=f"<= {GOAL:g}x",
        met=ratio.median <= GOAL,
        note=death,
    )
    fig.data = {
        "agents": n,
        "concurrency": CONCURRENCY,
        "orchestrator_per_agent": o.as_json(),
        "bare_per_spawn": b.as_json(),
        "bare_setpriv_per_spawn": Stat.of(bare_setpriv).as_json() if bare_setpriv else None,
        "ratio": ratio.as_json(),
    }
    return {"B7": fig}


async def spawn_bare(argv: list[str], n: int) -> float:
    """Seconds to run ``argv`` ``n`` times, CONCURRENCY at once, output piped and read."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await proc.communicate()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(one())
    return time.perf_counter() - t0
