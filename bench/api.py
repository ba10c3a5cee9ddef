"""B5: API fan-out. 1, 100 and 500 claude agents against the local Messages API (1 s latency).

The fake server (``tests/fakeapi.py``) runs in its own process so that its work does not
count as the orchestrator's loop lag. Each agent makes one streamed request and finishes
(the default reply is a plain text answer that ends the turn). A one-agent run first warms
up the process (the ``anthropic`` import happens once, on first use). The figure is
"not measured" when the claude agent is not part of this build.

Next to the wall time, the CPU each agent cost this process, split into the event loop's
thread (the SDK's requests and the scheduler) and every other thread (the model gateway's,
the journal's writer): which one a goal is missed by decides where the work should go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import time
from collections.abc import Iterator
from typing import Any

from bench.core import Config, Figure, LagProbe, Stat, ms, secs, times
from bench.workloads import cleanup, run_orchestrator, wide_limits
from orchestrator.plan.model import Task

LATENCY = 1.0
QUICK_LATENCY = 0.3
GOAL_RATIO = 3.0
GOAL_LAG = 0.100


@contextlib.contextmanager
def api_environment(url: str) -> Iterator[None]:
    """Point the SDK at the fake server for the block (it reads these when the client is made)."""
    names = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
    saved = {k: os.environ.get(k) for k in names}
    os.environ["ANTHROPIC_API_KEY"] = "bench-not-a-real-key"
    os.environ["ANTHROPIC_BASE_URL"] = url
    os.environ.pop("ANTHROPIC_AUTH_TOKEN", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def claude_missing() -> str | None:
    """Why the claude agent cannot run here, or None."""
    try:
        if importlib.util.find_spec("orchestrator.agents.claude.agent") is None:
            return "claude agent missing"
        importlib.import_module("orchestrator.agents.claude.agent")
    except ImportError as exc:
        return f"claude agent missing ({type(exc).__name__}: {exc})"
    return None


@dataclasses.dataclass(frozen=True)
class FanOut:
    wall: float
    lag_p99: float
    loop_cpu: float
    """CPU seconds of the event loop's thread (this one) during the run."""
    other_cpu: float
    """CPU seconds of every other thread of this process during the run."""


async def fan_out(cfg: Config, n: int) -> FanOut:
    """``n`` claude agents making one request each: wall, loop lag and CPU."""
    tasks = tuple(
        Task(f"c{i}", agent="claude", prompt="Answer OK and finish.", max_turns=3) for i in range(n)
    )
    loop0, all0 = time.thread_time(), time.process_time()
    async with LagProbe() as probe:
        out = await run_orchestrator(tasks, tmp=cfg.tmp, limits=wide_limits(n))
    loop_cpu = time.thread_time() - loop0
    other = time.process_time() - all0 - loop_cpu
    cleanup(out.responses)
    return FanOut(out.wall, probe.p(99), loop_cpu, other)


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B5", "API fan-out")
    missing = claude_missing()
    if missing is not None:
        fig.row("claude agents", measured=f"not measured: {missing}")
        fig.data = {"not_measured": missing}
        return {"B5": fig}
    from tests.fakeapi import spawn_fake_api

    sizes = cfg.pick((1, 100, 500), (1, 10, 40))
    server_dir = cfg.tmp / "fakeapi"
    server_dir.mkdir()
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    lags: dict[int, list[float]] = {n: [] for n in sizes}
    loop_cpu: list[float] = []
    other_cpu: list[float] = []
    latency = cfg.pick(LATENCY, QUICK_LATENCY)
    with spawn_fake_api(server_dir, latency=latency) as api, api_environment(api.url):
        await fan_out(cfg, 1)  # warm-up: the SDK import and the first connection
        for _ in range(min(cfg.repeats, 2)):
            for n in sizes:
                got = await fan_out(cfg, n)
                walls[n].append(got.wall)
                lags[n].append(got.lag_p99)
                if n == sizes[-1]:
                    loop_cpu.append(got.loop_cpu / n)
                    other_cpu.append(got.other_cpu / n)
        requests = len(api.requests())
    one = Stat.of(walls[sizes[0]])
    data: dict[str, Any] = {"latency": latency, "requests_seen": requests, "sizes": {}}
    for n in sizes:
        took = Stat.of(walls[n])
        lag_p99 = Stat.of(lags[n])
        ratio = Stat.of(w / one.median for w in walls[n])
        data["sizes"][n] = {"wall": took.as_json(), "lag_p99": lag_p99.as_json()}
        if n == sizes[0]:
            fig.row(
                f"{n} agent",
                measured=took.fmt(secs),
                baseline=f"API latency {secs(latency)}",
                note=f"loop lag p99 {lag_p99.fmt(ms)}",
            )
            continue
        largest = n == sizes[-1]
        fig.row(
            f"{n} agents",
            measured=took.fmt(secs),
            baseline=f"1 agent {one.fmt(secs)}",
            ratio=ratio.fmt(times),
            goal=f"<= {GOAL_RATIO:g}x" if largest else "-",
            met=ratio.median <= GOAL_RATIO if largest else None,
        )
        if largest:
            fig.row(
                f"loop lag p99, {n} agents",
                measured=lag_p99.fmt(ms),
                goal=f"<= {ms(GOAL_LAG)}",
                met=lag_p99.median <= GOAL_LAG,
            )
            fig.row(
                f"CPU per agent, {n} agents",
                measured=f"loop thread {Stat.of(loop_cpu).fmt(ms)}",
                baseline=f"other threads {Stat.of(other_cpu).fmt(ms)}",
                note="loop: the SDK's requests and the scheduler; others: the gateway, the writer",
            )
    data["cpu_per_agent"] = {
        "loop_thread": Stat.of(loop_cpu).as_json(),
        "other_threads": Stat.of(other_cpu).as_json(),
    }
    fig.data = data
    return {"B5": fig}
