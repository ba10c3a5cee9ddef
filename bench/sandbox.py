"""B13: what the sandbox costs an agent's start: one spawn of ``true`` through
`run_streaming`, confined (bubblewrap namespaces and mounts, the private temp directory, the
cgroup with the memory and pids limits) against the same spawn bare.

Spawns alternate one bare, one confined as a run confines them (through a sandbox started
ahead, `orchestrator.process.warm`, which the run refills in the background), one confined
fresh (what a spawn outside a run does, and a run's spawns beyond the sandboxes started
ahead: bubblewrap spawned then, the cgroup made and joined then), so all three see the same
machine load; the figure is the difference of the medians (p50), and its p90. The gap
between spawns is ``GAP``: a real run's spawns are far apart, and how long a cgroup move
waits depends on the time since the last one (an RCU grace period unless another move
happened a few milliseconds before).

A note says what bubblewrap's command line costs spawned bare, without the orchestrator and
without a cgroup: the floor of any bubblewrap sandbox on this machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from bench.core import Config, Figure, percentile, us
from orchestrator.plan.model import Plan, Task
from orchestrator.process.spawn import run_streaming
from orchestrator.process.warm import WARM, WarmSandboxes
from orchestrator.sandbox.bwrap import sandbox
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

GOAL = 0.005
"""Seconds of extra start cost per agent at p50."""
GAP = 0.02
"""Seconds between two spawns."""


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B13", "sandbox start cost")
    support = await asyncio.to_thread(probe)
    if not support.can_sandbox:
        fig.error = f"no sandbox on this machine: {support.problem}"
        return {"B13": fig}
    n = cfg.pick(300, 40)
    workspace = cfg.tmp / "b13-workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    plan = Plan("b13", (Task("a", agent="command", command=("true",)),), workspace=workspace)
    decision = decide(plan, support, responses=cfg.tmp / "b13-responses",
                      scratch=cfg.tmp / "b13-scratch")  # fmt: skip
    conf = decision.confinement
    assert conf is not None
    program = shutil.which("true") or "/bin/true"
    env = dict(os.environ)
    bare: list[float] = []
    ahead: list[float] = []
    fresh: list[float] = []
    raw: list[float] = []
    no_cgroup = Confinement(bwrap=conf.bwrap, scratch=conf.scratch, protected=conf.protected,
                            hidden=conf.hidden)  # fmt: skip
    line = sandbox(no_cgroup, [program], cwd=workspace, env=env)
    argv, sink = bare_line(line.argv)
    warm = WarmSandboxes()
    try:
        await warm.fill(conf, env)
        for _ in range(n):
            bare.append(await spawn_once(program, workspace, env, None))
            await asyncio.sleep(GAP)
            ahead.append(await spawn_once(program, workspace, env, conf, warm))
            await asyncio.sleep(GAP)
            fresh.append(await spawn_once(program, workspace, env, conf))
            await asyncio.sleep(GAP)
            raw.append(await spawn_raw(argv, sink))
            await asyncio.sleep(GAP)
    finally:
        await warm.close()
        os.close(sink)
        line.release()
        shutil.rmtree(conf.scratch, ignore_errors=True)
    b50, a50, f50, r50 = (percentile(x, 50) for x in (bare, ahead, fresh, raw))
    limits = "memory and pids cgroup" if conf.cgroups is not None else "no cgroup here"
    fig.row(
        f"{n} spawns of `true`, confined as a run does ({limits}; sandbox started ahead) "
        "vs bare, alternating",
        measured=f"p50 {us(a50)}, p90 {us(percentile(ahead, 90))}",
        baseline=f"bare p50 {us(b50)}, p90 {us(percentile(bare, 90))}",
        ratio=f"+{us(a50 - b50)} at p50",
        goal=f"<= +{us(GOAL)}",
        met=a50 - b50 <= GOAL,
        note=f"{warm.taken} of {n} took a sandbox started ahead; bubblewrap's command line "
        f"alone (no orchestrator, no cgroup): p50 {us(r50)} (+{us(r50 - b50)})",
    )
    fig.row(
        "the same, confined fresh (no sandbox started ahead: outside a run, or a burst "
        "past those started)",
        measured=f"p50 {us(f50)}, p90 {us(percentile(fresh, 90))}",
        baseline=f"bare p50 {us(b50)}",
        ratio=f"+{us(f50 - b50)} at p50",
    )
    fig.data = {
        "spawns": n,
        "gap": GAP,
        "taken_ahead": warm.taken,
        "bare_p50": b50,
        "ahead_p50": a50,
        "fresh_p50": f50,
        "command_line_alone_p50": r50,
        "extra_p50": a50 - b50,
        "bare_p90": percentile(bare, 90),
        "ahead_p90": percentile(ahead, 90),
        "fresh_p90": percentile(fresh, 90),
    }
    return {"B13": fig}


def bare_line(argv: list[str]) -> tuple[list[str], int]:
    """A sandbox's command line for spawning without the orchestrator: bubblewrap's info
    goes to ``/dev/null`` (the returned descriptor, to pass to the spawn and close after)."""
    sink = os.open(os.devnull, os.O_WRONLY)
    at = argv.index("--info-fd")
    return [*argv[: at + 1], str(sink), *argv[at + 2 :]], sink


async def spawn_raw(argv: list[str], sink: int) -> float:
    """The sandbox's command line, spawned and reaped bare."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(sink,)
    )
    code = await proc.wait()
    took = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}")
    return took


async def spawn_once(
    program: str,
    cwd: Path,
    env: dict[str, str],
    conf: Confinement | None,
    warm: WarmSandboxes | None = None,
) -> float:
    was = WARM.set(warm)
    try:
        t0 = time.perf_counter()
        code = await run_streaming([program], cwd=cwd, env=env, on_line=lambda s, line: None,
                                   sandbox=conf)  # fmt: skip
        took = time.perf_counter() - t0
    finally:
        WARM.reset(was)
    if code != 0:
        raise RuntimeError(f"{program} exited {code}")
    return took
