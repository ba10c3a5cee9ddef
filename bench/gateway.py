"""B11: the model gateway's cost: the same streaming load sent straight to a local Messages
API and sent through the gateway, side by side in one run.

The upstream is the fake Messages API (``tests/fakeapi.py``) in a process of its own; the
load is ``bench.loadgen`` in another (streaming clients, each with its own token); the
gateway runs where it runs in a real run: on its own thread in this process, whose event
loop (the scheduler's, in a run) is measured by a lag probe meanwhile and receives the
gateway's usage events, as a run's scheduler does.

- **Added latency**: 100 clients keep 100 streams in flight through the gateway while 100
  more send the same requests directly, at the same time (so both see the same load on the
  machine); each answer starts after 0.5 s and streams 40 events 25 ms apart (a model
  streaming 40 events a second). The figure is the difference of the latency percentiles
  (request sent to last byte) through the gateway and direct. Next to it, the CPU time the
  gateway's thread spent per request (from ``/proc``): what the gateway costs the machine,
  which on a crowded machine becomes the added latency.
- **The floor**: the same side-by-side load once more with a bare aiohttp relay
  (``bench.relay``: the gateway's server, client and loop, none of its bookkeeping) in place
  of the gateway: its added latency and CPU per request are what relaying through aiohttp in
  this interpreter costs at all, whatever the gateway does on top.
- **500 streaming agents**: 500 clients send 3 streamed requests each, one after another
  (an agent's turns; each answer starts after 1 s, as in B5, and streams 20 events 25 ms
  apart), through the gateway, then directly, alternately: the ratio of the wall times, and
  the lag of this process's event loop.

The gateway's request rate limit is raised for the figure (its default, 50 a second, would
make 500 agents wait for policy, not for the gateway's work); its AIMD ceiling is the
number of clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, LagProbe, Stat, ms, percentile, secs, times
from orchestrator.events import AgentEvent
from orchestrator.gateway.ledger import Ledger
from orchestrator.gateway.pricing import PriceTable
from orchestrator.gateway.service import open_gateway
from orchestrator.gateway.shared import GatewaySettings, Upstream

KEY = "bench-not-a-real-key"
GOAL_P50 = 0.001
GOAL_P99 = 0.005
GOAL_RATIO = 1.2
GOAL_LAG = 0.050


class _Hooks:
    def on_after_turn(self, agent_id: str) -> None:
        pass

    def on_stopped(self, reason: str) -> None:
        raise RuntimeError(f"the gateway stopped: {reason}")


@dataclass
class Through:
    """A gateway serving the bench: its URL, the file of its tokens, what it posted here."""

    url: str
    tokens: Path
    events: list[AgentEvent] = field(default_factory=list)
    cpu: float = 0.0
    """CPU seconds the gateway's thread used while serving (see `gateway_cpu`)."""


def gateway_cpu(name: str = "gateway") -> float:
    """CPU seconds used so far by the thread of this process called ``name`` (0 if none)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            try:
                with open(f"/proc/self/task/{thread.native_id}/schedstat") as f:
                    return int(f.read().split()[0]) / 1e9
            except OSError:
                return 0.0
    return 0.0


@contextlib.asynccontextmanager
async def gateway_for(upstream: str, tokens: Path, clients: int) -> AsyncIterator[Through]:
    """A gateway in this process with a grant per client, their tokens written to ``tokens``."""
    settings = replace(GatewaySettings(), requests_per_second=1e6)
    async with open_gateway(
        upstream=Upstream(upstream, ("x-api-key", KEY)), ledger=Ledger(None), prices=PriceTable(),
        hooks=_Hooks(), settings=settings, ceiling=clients,
    ) as gateway:  # fmt: skip
        through = Through(gateway.url, tokens)
        deadline = time.monotonic() + 3600
        grants = [
            gateway.open_grant(f"a{n}", deadline=deadline, emit=through.events.append)
            for n in range(clients)
        ]
        await asyncio.to_thread(tokens.write_text, "\n".join(g.token for g in grants) + "\n")
        start = gateway_cpu()
        try:
            yield through
        finally:
            through.cpu = gateway_cpu() - start
            for grant in grants:
                await gateway.close_grant(grant)


async def loadgen(groups: list[tuple[str, Path, int]], *, requests: int) -> list[dict[str, Any]]:
    """Run ``bench.loadgen`` with these (url, tokens file, clients) groups; its results."""
    argv = [sys.executable, "-m", "bench.loadgen", "--requests", str(requests)]
    for url, tokens, clients in groups:
        argv += ["--group", url, str(tokens), str(clients)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err.decode(errors='replace')[-500:]}")
    result: list[dict[str, Any]] = json.loads(out)
    return result


async def side_by_side(
    cfg: Config, upstream: str, *, clients: int, requests: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same load at the same time: ``clients`` streams direct, ``clients`` through."""
    direct_keys = cfg.tmp / "direct.txt"
    direct_keys.write_text(KEY + "\n")
    async with gateway_for(upstream, cfg.tmp / "gateway.txt", clients) as gw:
        direct, through = await loadgen(
            [(upstream, direct_keys, clients), (gw.url, gw.tokens, clients)], requests=requests
        )
    through["cpu_per_request"] = gw.cpu / (clients * requests)
    return direct, through


async def side_by_side_bare(
    cfg: Config, upstream: str, *, clients: int, requests: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """As `side_by_side`, through a bare relay (`bench.relay`) instead of the gateway."""
    from bench.relay import THREAD, open_bare_relay

    keys = cfg.tmp / "direct.txt"
    keys.write_text(KEY + "\n")
    async with open_bare_relay(upstream, ("x-api-key", KEY)) as url:
        start = gateway_cpu(THREAD)
        direct, through = await loadgen(
            [(upstream, keys, clients), (url, keys, clients)], requests=requests
        )
        through["cpu_per_request"] = (gateway_cpu(THREAD) - start) / (clients * requests)
    return direct, through


async def alone(
    cfg: Config, upstream: str, *, through: bool, clients: int, requests: int
) -> tuple[dict[str, Any], float, int]:
    """The load direct or through a fresh gateway: (its result, loop lag p99, events posted)."""
    tokens = cfg.tmp / "tokens.txt"
    if not through:
        tokens.write_text(KEY + "\n")
        async with LagProbe() as lag:
            [result] = await loadgen([(upstream, tokens, clients)], requests=requests)
        return result, lag.p(99), 0
    async with gateway_for(upstream, tokens, clients) as gw, LagProbe() as lag:
        [result] = await loadgen([(gw.url, tokens, clients)], requests=requests)
    return result, lag.p(99), len(gw.events)


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    from tests.fakeapi import spawn_fake_api

    fig = Figure("B11", "model gateway")
    repeats = min(cfg.repeats, 3)
    # --- added latency at 100 concurrent streams --------------------------------------------
    streams, per_client = cfg.pick((100, 8), (100, 2))
    script = {"default": {"text": "x" * 312, "chunk": 8, "trickle": 0.025}}
    added: dict[int, list[float]] = {50: [], 99: []}
    direct_p: dict[int, list[float]] = {50: [], 99: []}
    first_byte: list[float] = []
    cpu: list[float] = []
    bare_added: list[float] = []
    bare_cpu: list[float] = []
    (cfg.tmp / "lat").mkdir()
    with spawn_fake_api(cfg.tmp / "lat", script, latency=0.5) as api:
        await alone(cfg, api.url, through=True, clients=10, requests=1)  # warm-up: imports
        for _ in range(repeats):
            direct, through = await side_by_side(cfg, api.url, clients=streams, requests=per_client)
            for q in (50, 99):
                d = percentile(direct["latency"], q)
                direct_p[q].append(d)
                added[q].append(percentile(through["latency"], q) - d)
            first_byte.append(
                percentile(through["first_byte"], 50) - percentile(direct["first_byte"], 50)
            )
            cpu.append(through["cpu_per_request"])
            direct, bare = await side_by_side_bare(
                cfg, api.url, clients=streams, requests=per_client
            )
            bare_added.append(percentile(bare["latency"], 50) - percentile(direct["latency"], 50))
            bare_cpu.append(bare["cpu_per_request"])
    for q, goal in ((50, GOAL_P50), (99, GOAL_P99)):
        stat = Stat.of(added[q])
        fig.row(
            f"added latency p{q}, {streams} streams",
            measured=stat.fmt(ms),
            baseline=f"direct p{q} {Stat.of(direct_p[q]).fmt(ms)}",
            goal=f"<= {ms(goal)}",
            met=stat.median <= goal,
            note=f"time to first byte p50: +{Stat.of(first_byte).fmt(ms)}" if q == 50 else "",
        )
    cpu_ratio = Stat.of(c / b for c, b in zip(cpu, bare_cpu, strict=True))
    fig.row(
        "gateway CPU per streamed request (42 events)",
        measured=Stat.of(cpu).fmt(ms),
        baseline=f"bare aiohttp relay {Stat.of(bare_cpu).fmt(ms)}",
        ratio=cpu_ratio.fmt(times),
        note="each thread's CPU time over the requests it served",
    )
    fig.row(
        f"floor: added latency p50 of a bare aiohttp relay, {streams} streams",
        measured=Stat.of(bare_added).fmt(ms),
        goal=f"<= {ms(GOAL_P50)}",
        note="the same load through bench.relay (no gateway bookkeeping), side by side",
    )
    # --- 500 streaming agents -----------------------------------------------------------------
    agents, turns = cfg.pick((500, 3), (100, 2))
    walls: dict[bool, list[float]] = {False: [], True: []}
    lags: dict[bool, list[float]] = {False: [], True: []}
    events = 0
    (cfg.tmp / "agents").mkdir()
    script = {"default": {"text": "y" * 152, "chunk": 8, "trickle": 0.025}}
    with spawn_fake_api(cfg.tmp / "agents", script, latency=cfg.pick(1.0, 0.3)) as api:
        for _ in range(repeats):
            for via in (False, True):
                result, lag, posted = await alone(
                    cfg, api.url, through=via, clients=agents, requests=turns
                )
                walls[via].append(result["wall"])
                lags[via].append(lag)
                events = max(events, posted)
    ratio = Stat.of(t / d for t, d in zip(walls[True], walls[False], strict=True))
    fig.row(
        f"{agents} streaming agents x {turns} turns",
        measured=f"through {Stat.of(walls[True]).fmt(secs)}",
        baseline=f"direct {Stat.of(walls[False]).fmt(secs)}",
        ratio=ratio.fmt(times),
        goal=f"<= {GOAL_RATIO:g}x",
        met=ratio.median <= GOAL_RATIO,
    )
    lag_stat = Stat.of(lags[True])
    fig.row(
        f"main loop lag p99, {agents} agents through it",
        measured=lag_stat.fmt(ms),
        baseline=f"direct {Stat.of(lags[False]).fmt(ms)}",
        goal=f"<= {ms(GOAL_LAG)}",
        met=lag_stat.median <= GOAL_LAG,
        note=f"{events} usage events posted to the loop per run",
    )
    fig.data = {
        "added": {str(q): Stat.of(v).as_json() for q, v in added.items()},
        "direct": {str(q): Stat.of(v).as_json() for q, v in direct_p.items()},
        "added_first_byte_p50": Stat.of(first_byte).as_json(),
        "gateway_cpu_per_request": Stat.of(cpu).as_json(),
        "bare_relay_cpu_per_request": Stat.of(bare_cpu).as_json(),
        "bare_relay_added_p50": Stat.of(bare_added).as_json(),
        "walls": {"direct": walls[False], "through": walls[True]},
        "lag_p99": {"direct": lags[False], "through": lags[True]},
    }
    return {"B11": fig}
