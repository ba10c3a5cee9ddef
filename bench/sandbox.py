"""B13: what the sandbox costs an agent's start: one spawn of ``true`` through
`run_streaming`, confined (bubblewrap namespaces and mounts, the private temp directory, the
cgroup with the memory and pids limits, all made and removed) against the same spawn bare.

Spawns alternate one confined, one bare, so both see the same machine load; the figure is
the difference of the medians (p50), and its p90. Two more spawns in each round show where
the cost lies: the same confinement without the cgroup, and the sandbox's command line
(``env``, ``bwrap``, ``env``, ``true``; no cgroup) spawned bare, without the orchestrator:
what bubblewrap itself costs on this machine.
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
from orchestrator.sandbox.bwrap import sandbox
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.decision import decide
from orchestrator.sandbox.support import probe

GOAL = 0.005
"""Seconds of extra start cost per agent at p50."""


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
    no_cgroup = Confinement(bwrap=conf.bwrap, scratch=conf.scratch, protected=conf.protected,
                            hidden=conf.hidden)  # fmt: skip
    program = shutil.which("true") or "/bin/true"
    bare: list[float] = []
    confined: list[float] = []
    plain: list[float] = []
    raw: list[float] = []
    line = sandbox(no_cgroup, [program], cwd=workspace, env=dict(os.environ))
    argv, sink = bare_line(line.argv)
    try:
        for _ in range(n):
            bare.append(await spawn_once(program, workspace, None))
            confined.append(await spawn_once(program, workspace, conf))
            plain.append(await spawn_once(program, workspace, no_cgroup))
            raw.append(await spawn_raw(argv, sink))
    finally:
        os.close(sink)
        line.release()
        shutil.rmtree(conf.scratch, ignore_errors=True)
    b50, c50, p50, r50 = (percentile(x, 50) for x in (bare, confined, plain, raw))
    extra = c50 - b50
    limits = "memory and pids cgroup" if conf.cgroups is not None else "no cgroup here"
    fig.row(
        f"{n} spawns of `true`, confined ({limits}) vs bare, alternating",
        measured=f"p50 {us(c50)}, p90 {us(percentile(confined, 90))}",
        baseline=f"bare p50 {us(b50)}, p90 {us(percentile(bare, 90))}",
        ratio=f"+{us(extra)} at p50",
        goal=f"<= +{us(GOAL)}",
        met=extra <= GOAL,
        note=f"without the cgroup: p50 {us(p50)} (+{us(p50 - b50)}); the sandbox's command "
        f"line alone, no orchestrator, no cgroup: p50 {us(r50)} (+{us(r50 - b50)})",
    )
    fig.data = {
        "spawns": n,
        "bare_p50": b50,
        "confined_p50": c50,
        "confined_without_cgroup_p50": p50,
        "command_line_alone_p50": r50,
        "extra_p50": extra,
        "bare_p90": percentile(bare, 90),
        "confined_p90": percentile(confined, 90),
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


async def spawn_once(program: str, cwd: Path, conf: Confinement | None) -> float:
    t0 = time.perf_counter()
    code = await run_streaming([program], cwd=cwd, env=dict(os.environ),
                               on_line=lambda s, line: None, sandbox=conf)  # fmt: skip
    took = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"{program} exited {code}")
    return took
