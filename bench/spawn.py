"""B7: subprocess agents. What starting, reading and reaping a ``true`` costs per agent.

The orchestrator runs 1,000 command agents ``true`` (each in its own process group, with
the parent-death signal, progress files and journal); the baseline is bare
``asyncio.create_subprocess_exec`` of the same command line with its output piped and read
to the end. Both keep the same number of children alive at once. Where the machine can make
a sandbox, both run it: the orchestrator's agents confined (bubblewrap, a private temp
directory each; no cgroup, whose set-up is the kernel's cost and is B13's), the baseline
the very command line the sandbox spawns, so the ratio measures the orchestrator, not
bubblewrap. Elsewhere both run ``true`` bare.

The orchestrator's progress files and journal go to the scratch dir, then (alternated with
it, on a machine with one) to tmpfs: an agent's slot includes its two file creates, and on a
disk where a create costs most of a millisecond (ext4 skipping recently deleted inodes)
that is what the scratch row measures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from bench.core import Config, Figure, Stat, times, tmpfs_dir, us
from bench.sandbox import bare_line
from bench.workloads import cleanup, run_orchestrator, wide_limits
from orchestrator.plan.model import Plan, Task
from orchestrator.sandbox.bwrap import sandbox
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

GOAL = 1.2
CONCURRENCY = 16


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B7", "subprocess spawn overhead")
    n = cfg.pick(1000, 100)
    program = shutil.which("true") or "/bin/true"
    tasks = tuple(Task(f"p{i}", agent="command", command=(program,)) for i in range(n))
    limits = wide_limits(n, max_concurrency=CONCURRENCY)
    conf = await asyncio.to_thread(_confinement, cfg, tasks)
    workspace = cfg.tmp / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    argv = [program]
    fds: tuple[int, ...] = ()
    made = None
    if conf is not None:  # the baseline spawns exactly what a confined agent's spawn does
        made = sandbox(conf, [program], cwd=workspace, env=dict(os.environ))
        argv, sink = bare_line(made.argv)
        fds = (sink,)
    places = [("scratch dir", cfg.tmp)]
    shm = tmpfs_dir()
    if shm is not None:
        places.append(("tmpfs", shm))
    orch: dict[str, list[float]] = {label: [] for label, _ in places}
    bare: list[float] = []
    try:
        for _ in range(cfg.repeats):
            for label, where in places:
                out = await run_orchestrator(tasks, tmp=where, limits=limits, sandbox=conf)
                orch[label].append(out.wall / n)
                cleanup(out.responses)
            bare.append(await spawn_bare(argv, n, fds) / n)
    finally:
        for fd in fds:
            os.close(fd)
        if made is not None:
            made.release()
        if conf is not None:
            shutil.rmtree(conf.scratch, ignore_errors=True)
        if shm is not None:
            cleanup(shm)
    b = Stat.of(bare)
    what = "sandboxed (bwrap, no cgroup) on both sides" if conf else "no sandbox here: bare"
    ratios = {}
    for label, per_agent in orch.items():
        o = Stat.of(per_agent)
        ratio = ratios[label] = Stat.of(x / y for x, y in zip(per_agent, bare, strict=True))
        fig.row(
            f"{n:,} `true` agents, {CONCURRENCY} at a time, files in {label}",
            measured=f"{o.fmt(us)}/agent",
            baseline=f"bare {b.fmt(us)}/spawn of the same command line",
            ratio=ratio.fmt(times),
            goal=f"<= {GOAL:g}x",
            met=ratio.median <= GOAL,
            note=what,
        )
    fig.data = {
        "agents": n,
        "concurrency": CONCURRENCY,
        "sandboxed": conf is not None,
        "orchestrator_per_agent": {k: Stat.of(v).as_json() for k, v in orch.items()},
        "bare_per_spawn": b.as_json(),
        "ratio": {k: r.as_json() for k, r in ratios.items()},
    }
    return {"B7": fig}


def _confinement(cfg: Config, tasks: tuple[Task, ...]) -> Confinement | None:
    """The run's sandbox as the CLI would make it, less the cgroup (B13 measures that)."""
    support = probe()
    if not support.can_sandbox:
        return None
    plan = Plan("b7", tasks, workspace=cfg.tmp / "workspace")
    decision = decide(plan, support, responses=cfg.tmp / "b7-responses",
                      scratch=cfg.tmp / "b7-scratch")  # fmt: skip
    conf = decision.confinement
    if conf is None:
        return None
    return Confinement(bwrap=conf.bwrap, scratch=conf.scratch, protected=conf.protected,
                       hidden=conf.hidden)  # fmt: skip


async def spawn_bare(argv: list[str], n: int, fds: tuple[int, ...] = ()) -> float:
    """Seconds to run ``argv`` ``n`` times, CONCURRENCY at once, output piped and read."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
            )
            await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{argv[0]} exited {proc.returncode}")

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(one())
    return time.perf_counter() - t0
