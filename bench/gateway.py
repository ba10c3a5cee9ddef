"""B11: the model gateway's cost: the same streaming load sent straight to a local Messages
API and sent through the gateway, side by side in one run.

The gateway runs where it runs in a real run: on its own thread in this process, whose event
loop (the scheduler's, in a run) receives the gateway's usage events, as a run's scheduler
does.

- **Added latency**: 100 clients keep 100 streams in flight, each sending its requests one
  after another, directly to a local upstream, then through the gateway, then through the
  two floors below, one after another, a few times over; each answer starts after 0.5 s and
  streams its 45 events 25 ms apart (a model streaming 40 events a second), 1.625 s in all.
  The clients' first requests are spread over that length, so the streams run at phases of
  their own, as agents' turns do (an agent asks again when its tool call is done, not when
  the others do). The instrument is ``bench/wire.mjs`` in Node (an upstream, and the load in
  another process): an instrument in Python spent more CPU per event than the gateway does,
  and its own loop lag (3-7 ms at the median, changing from run to run) was most of what it
  measured. A request's latency (sent to last byte) is taken net of the upstream's own time
  for it (the ``: served`` stamp the upstream puts on its last event), so a timer of the
  upstream that fires late counts for neither path. The figure is the difference of the
  percentiles of that net latency, through and direct, over the requests after each
  client's first.
  **The herd** has rows of its own: the same 100 clients all starting within 25 ms, so that
  every wave of 100 requests (and of 100 last events) reaches the gateway within a few
  milliseconds and queues on its one thread; and each client's first request in it (the
  client connects too).
  Next to it, the CPU time the gateway's thread spent per request (from ``/proc``): what
  the gateway costs the machine.
- **The references**: the same load through a bare aiohttp relay (``bench.relay``: an
  aiohttp server and client on a loop like the gateway's, none of its bookkeeping), and
  through a byte pipe (a thread of this process that copies bytes between sockets, no HTTP
  at all): what relaying through aiohttp costs, and what any relay in this interpreter
  adds at all.
- **500 streaming agents**: 500 clients send 3 streamed requests each, one after another
  (an agent's turns; each answer starts after 1 s, as in B5, and streams 20 events 25 ms
  apart), through the gateway, then directly, alternately: the ratio of the wall times, and
  the lag of this process's event loop. The upstream is the fake Messages API
  (``tests/fakeapi.py``) in a process of its own, the load ``bench.loadgen`` in another.

The gateway's request rate limit is raised for the figure (its default, 50 a second, would
make 500 agents wait for policy, not for the gateway's work); its AIMD ceiling is the
number of clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
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


WIRE = Path(__file__).with_name("wire.mjs")


@contextlib.asynccontextmanager
async def wire_upstream(tmp: Path, events: list[tuple[str, Any]], *, latency: float,
                        trickle: float) -> AsyncIterator[str]:  # fmt: skip
    """``bench/wire.mjs serve`` sending these events; yields its URL."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found")
    file = tmp / "wire-events.json"
    file.write_text(json.dumps(events))
    proc = await asyncio.create_subprocess_exec(
        node, str(WIRE), "serve", str(file), str(latency), str(trickle),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"bench/wire.mjs did not start: {line!r}")
        yield line.split()[1]
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def wire_load(url: str, tokens: Path, *, clients: int, requests: int,
                    stagger: float) -> dict[str, Any]:  # fmt: skip
    """``bench/wire.mjs load``: one group of clients; its result (see the module)."""
    node = shutil.which("node") or "node"
    argv = [node, str(WIRE), "load", str(requests), str(stagger), url, str(tokens), str(clients)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench/wire.mjs load failed: {err.decode(errors='replace')[-500:]}")
    [result] = json.loads(out)
    assert isinstance(result, dict)
    return result


def net(result: dict[str, Any], *, first: bool = False) -> list[float]:
    """Each request's latency less the upstream's own time for it: of the requests after
    each client's first (a client's first opens its connections), or of the first ones."""
    rows = zip(result["latency"], result["served"], result["turn"], strict=True)
    return [total - served for total, served, turn in rows if (turn == 0) == first]


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
    try:
        await _added_latency(cfg, fig, repeats)
    except RuntimeError as exc:
        fig.row("added latency, 100 streams", measured=f"not measured: {exc}", goal="-")
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
    fig.data.update(
        {
            "walls": {"direct": walls[False], "through": walls[True]},
            "lag_p99": {"direct": lags[False], "through": lags[True]},
        }
    )
    return {"B11": fig}


async def _added_latency(cfg: Config, fig: Figure, repeats: int) -> None:
    """The added-latency rows (see the module's docstring)."""
    from bench.relay import THREAD, open_bare_relay, open_byte_pipe
    from tests.fakeapi import stream_events, text

    streams, per_client, per_herd = cfg.pick((100, 6, 8), (100, 3, 3))
    trickle, first_event = 0.025, 0.5
    events = stream_events(text("x" * 312).with_trickle(trickle, chunk=8))
    length = first_event + len(events) * trickle  # one answer, start to end
    keys = cfg.tmp / "direct.txt"
    keys.write_text(KEY + "\n")
    paths = ("gateway", "bare", "pipe")
    added: dict[str, dict[int, list[float]]] = {p: {50: [], 99: []} for p in paths}
    direct_p: dict[int, list[float]] = {50: [], 99: []}
    herd: dict[int, list[float]] = {50: [], 99: []}
    firsts: dict[int, list[float]] = {50: [], 99: []}
    cpu: dict[str, list[float]] = {"gateway": [], "bare": []}
    steady = {"clients": streams, "requests": per_client, "stagger": length}
    herded = {"clients": streams, "requests": per_herd, "stagger": trickle}
    async with wire_upstream(cfg.tmp, events, latency=first_event, trickle=trickle) as upstream:
        await wire_load(upstream, keys, clients=10, requests=1, stagger=0)  # warm-up
        async with gateway_for(upstream, cfg.tmp / "gateway.txt", streams) as gw:
            await wire_load(gw.url, gw.tokens, clients=10, requests=1, stagger=0)
            for _ in range(repeats):
                direct = net(await wire_load(upstream, keys, **steady))
                start = gateway_cpu()
                through = net(await wire_load(gw.url, gw.tokens, **steady))
                cpu["gateway"].append((gateway_cpu() - start) / (streams * per_client))
                async with open_bare_relay(upstream, ("x-api-key", KEY)) as url:
                    start = gateway_cpu(THREAD)
                    bare = net(await wire_load(url, keys, **steady))
                    cpu["bare"].append((gateway_cpu(THREAD) - start) / (streams * per_client))
                async with open_byte_pipe(upstream) as url:
                    pipe = net(await wire_load(url, keys, **steady))
                herd_direct = await wire_load(upstream, keys, **herded)
                herd_through = await wire_load(gw.url, gw.tokens, **herded)
                for q in (50, 99):
                    d = percentile(direct, q)
                    direct_p[q].append(d)
                    for path, values in (("gateway", through), ("bare", bare), ("pipe", pipe)):
                        added[path][q].append(percentile(values, q) - d)
                    herd[q].append(percentile(net(herd_through), q)
                                   - percentile(net(herd_direct), q))  # fmt: skip
                    firsts[q].append(
                        percentile(net(herd_through, first=True), q)
                        - percentile(net(herd_direct, first=True), q)
                    )
    for q, goal in ((50, GOAL_P50), (99, GOAL_P99)):
        stat = Stat.of(added["gateway"][q])
        fig.row(
            f"added latency p{q}, {streams} streams",
            measured=stat.fmt(ms),
            baseline=f"direct p{q} {Stat.of(direct_p[q]).fmt(ms)} (net of the upstream's time)",
            goal=f"<= {ms(goal)}",
            met=stat.median <= goal,
            note=f"streams at phases of their own: first requests spread over {length:g} s",
        )
    fig.row(
        f"added latency p50 | p99, a herd: {streams} requests within {ms(trickle)}, in waves",
        measured=f"{Stat.of(herd[50]).fmt(ms)} | {Stat.of(herd[99]).fmt(ms)}",
        note="all clients start together, so each wave of requests queues on the gateway's thread",
    )
    fig.row(
        "added latency p50 | p99 of each client's first request, in the herd",
        measured=f"{Stat.of(firsts[50]).fmt(ms)} | {Stat.of(firsts[99]).fmt(ms)}",
        note="the gateway accepts the client's connection too",
    )
    cpu_ratio = Stat.of(c / b for c, b in zip(cpu["gateway"], cpu["bare"], strict=True))
    fig.row(
        f"gateway CPU per streamed request ({len(events)} events)",
        measured=Stat.of(cpu["gateway"]).fmt(ms),
        baseline=f"bare aiohttp relay {Stat.of(cpu['bare']).fmt(ms)}",
        ratio=cpu_ratio.fmt(times),
        note="each thread's CPU time over the requests it served",
    )
    paths_named = (("bare", "a bare aiohttp relay"), ("pipe", "a byte pipe (no HTTP), the floor"))
    for path, what in paths_named:
        fig.row(
            f"added latency p50 | p99 of {what}, {streams} streams",
            measured=f"{Stat.of(added[path][50]).fmt(ms)} | {Stat.of(added[path][99]).fmt(ms)}",
            note="the same load through bench.relay, in turn with the gateway",
        )
    fig.data.update(
        {
            "added": {
                p: {str(q): Stat.of(v).as_json() for q, v in added[p].items()} for p in paths
            },
            "direct": {str(q): Stat.of(v).as_json() for q, v in direct_p.items()},
            "herd_added": {str(q): Stat.of(v).as_json() for q, v in herd.items()},
            "first_request_added": {str(q): Stat.of(v).as_json() for q, v in firsts.items()},
            "cpu_per_request": {p: Stat.of(v).as_json() for p, v in cpu.items()},
        }
    )
