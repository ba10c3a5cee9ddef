"""B12: the web view under load. Agents flood output while simulated browsers watch the run.

The same run twice, side by side: without the web server, then with it (in a process of its
own, as `run --web` starts it) and 20 WebSocket clients in another process (as browsers are).
Measured: the main loop's lag p99 in both (the page must not slow the run), and for every
agent's end, how long until each client saw it (the journal's end time to the client's
receipt of the first state or patch that shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bench.core import Config, Figure, LagProbe, Stat, ms, percentile, times
from bench.workloads import cleanup, run_orchestrator, wide_limits
from orchestrator.plan.model import Task
from orchestrator.web.server import open_in_process

GOAL_LAG_RATIO = 1.2
GOAL_P95 = 0.250
CLIENT = Path(__file__).with_name("webclients.py")


def tasks(agents: int, lines: int) -> tuple[Task, ...]:
    fmt = "flood %g: the quick brown fox jumps over the lazy dog"
    # the sleep spreads the ends over time, so there is a stream of changes to see
    return tuple(
        Task(f"w{i}", agent="command",
             command=("sh", "-c", f"seq -f '{fmt}' {lines}; sleep {0.05 * (i % 40):.2f}"))
        for i in range(agents)
    )  # fmt: skip


@contextlib.asynccontextmanager
async def watched(responses: Path, clients: int, out: list[float]) -> AsyncIterator[None]:
    """The web server as `run --web` starts it, and ``clients`` browsers in a process."""
    async with open_in_process(responses) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CLIENT), url, str(clients),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert (await proc.stdout.readline()).strip() == b"connected"
        try:
            yield
            await asyncio.sleep(1.0)  # the last states reach the clients
        finally:
            proc.stdin.close()
            data, _ = await proc.communicate()
            out.extend(json.loads(data or b"[]"))


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B12", "web view under load")
    agents, lines, clients = cfg.pick(500, 100), cfg.pick(400, 100), cfg.pick(20, 5)
    limits = wide_limits(agents)
    bare_lag: list[float] = []
    web_lag: list[float] = []
    latencies: list[float] = []
    for _ in range(cfg.repeats):
        async with LagProbe() as probe:
            out = await run_orchestrator(tasks(agents, lines), tmp=cfg.tmp, limits=limits)
        cleanup(out.responses)
        bare_lag.append(probe.p(99))
        seen: list[float] = []
        async with LagProbe() as probe:
            out = await run_orchestrator(
                tasks(agents, lines), tmp=cfg.tmp, limits=limits,
                around=lambda r, seen=seen: watched(r, clients, seen),  # type: ignore[misc]
            )  # fmt: skip
        cleanup(out.responses)
        web_lag.append(probe.p(99))
        latencies.append(percentile(seen, 95) if seen else float("inf"))
    ratio = Stat.of(w / b for w, b in zip(web_lag, bare_lag, strict=True))
    p95 = Stat.of(latencies)
    fig.row(
        f"{agents} agents flooding, {clients} browsers: loop lag p99",
        measured=Stat.of(web_lag).fmt(ms),
        baseline=f"no server {Stat.of(bare_lag).fmt(ms)}",
        ratio=ratio.fmt(times),
        goal=f"<= {GOAL_LAG_RATIO:g}x",
        met=ratio.median <= GOAL_LAG_RATIO,
    )
    fig.row(
        "agent's end -> every browser, p95",
        measured=p95.fmt(ms),
        goal=f"<= {ms(GOAL_P95)}",
        met=p95.median <= GOAL_P95,
    )
    fig.data = {
        "agents": agents,
        "clients": clients,
        "lag_p99_without": Stat.of(bare_lag).as_json(),
        "lag_p99_with": Stat.of(web_lag).as_json(),
        "ratio": ratio.as_json(),
        "end_to_browser_p95": p95.as_json(),
    }
    return {"B12": fig}
