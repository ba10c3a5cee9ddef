"""B2 (orchestration cost per agent) and B4 (10,000 concurrent agents: time and memory).

B2 runs zero-work scripted agents (an empty script: the agent says it started and that it
finished) with progress files, sidecars and the journal, against a bare asyncio ready-queue
running the same graph. A third number, the *file floor*, is what the same file operations
cost as plain ``os`` calls (two creates with a header, two appends, three journal lines per
agent): on a shared disk file creation alone can cost 0.1-1 ms.

B4 runs in fresh child processes (``python -m bench.overhead child ...``) so that resident
memory is not the previous figure's: each child reports its wall time and its RSS before
the run and while every agent sleeps; the bare loop holds the same number of sleeping tasks.
Its time is measured with the files in the scratch dir and, alternated, in tmpfs (20,000
creates on a real disk can take longer than the agents sleep: the scratch row is that
disk's, the tmpfs row the orchestrator's); the stall and the memory are taken from both.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench.core import Config, Figure, LagProbe, Stat, kib, ms, rss_bytes, times, tmpfs_dir, us
from bench.workloads import Outcome, cleanup, run_bare, run_orchestrator, wide_limits
from orchestrator.engine.scheduler import Run
from orchestrator.plan.model import Sleep, Task

REPO = Path(__file__).resolve().parent.parent
B2_GOAL, B2_STRETCH = 10.0, 5.0
B2_GOAL_DISK = 1.2
"""On a real disk: the orchestrator over the file floor (the same file work as plain os calls)."""
B4_GOAL_TIME, B4_GOAL_BYTES = 1.1, 4096
B4_GOAL_STALL = 0.100


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    if "B2" in want:
        out["B2"] = await measure_b2(cfg)
    if "B4" in want:
        out["B4"] = await measure_b4(cfg)
    return out


# --- B2 -----------------------------------------------------------------------------------------


async def measure_b2(cfg: Config) -> Figure:
    fig = Figure("B2", "orchestration cost per agent")
    n = cfg.pick(1000, 200)
    repeats = max(cfg.repeats, cfg.pick(5, 1))
    places = [("scratch dir", cfg.tmp)]
    shm = tmpfs_dir()
    if shm is not None:
        places.append(("tmpfs", shm))
    try:
        for label, where in places:
            fig.data[label] = await _b2_at(fig, label, where, n, repeats)
    finally:
        for _, where in places[1:]:
            cleanup(where)
    fig.data["agents"] = n
    return fig


async def _b2_at(fig: Figure, label: str, where: Path, n: int, repeats: int) -> dict[str, Any]:
    tasks = tuple(Task(f"z{i}", agent="scripted") for i in range(n))
    graph = {t.id: () for t in tasks}
    zeros = dict.fromkeys(graph, 0.0)
    orch, cpu, bare, floor = [], [], [], []
    for i in range(repeats):
        c0 = time.process_time()
        res = await run_orchestrator(tasks, tmp=where, limits=wide_limits(n))
        cpu.append((time.process_time() - c0) / n)
        orch.append(res.wall / n)
        cleanup(res.responses)
        bare.append(await run_bare(graph, zeros) / n)
        floor.append(file_floor(where / f"floor-{i}", n).total)
    o, b, f = Stat.of(orch), Stat.of(bare), Stat.of(floor)
    ratio = Stat.of(x / y for x, y in zip(orch, bare, strict=True))
    over_floor = Stat.of(x / y for x, y in zip(orch, floor, strict=True))
    if label == "tmpfs":
        shown, goal, met = ratio, f"<= {B2_GOAL:g}x bare", ratio.median <= B2_GOAL
        other = f"{over_floor.fmt(times)} the file floor"
    else:  # a real disk: only the file system should be left
        shown, goal = over_floor, f"<= {B2_GOAL_DISK:g}x file floor"
        met, other = over_floor.median <= B2_GOAL_DISK, f"{ratio.fmt(times)} bare"
    fig.row(
        f"{n:,} zero-work agents, files in {label}",
        measured=f"{o.fmt(us)}/agent",
        baseline=f"bare {b.fmt(us)}/agent; file floor {f.fmt(us)}/agent",
        ratio=shown.fmt(times),
        goal=goal,
        met=met,
        note=(
            f"{other}; CPU {Stat.of(cpu).fmt(us)}/agent (all threads); file floor: the same "
            "creates, appends and journal lines as plain os calls"
        ),
    )
    return {
        "where": str(where),
        "orchestrator_per_agent": o.as_json(),
        "orchestrator_cpu_per_agent": Stat.of(cpu).as_json(),
        "bare_per_agent": b.as_json(),
        "file_floor_per_agent": f.as_json(),
        "ratio": ratio.as_json(),
        "over_file_floor": over_floor.as_json(),
    }


class FileFloor(NamedTuple):
    """Seconds per agent for the progress and journal file operations alone, as plain os
    calls: ``starts``, what an agent waits for before it acts (its start record and its two
    files created with their header), and ``total``, that and the rest (its appends and end
    records)."""

    starts: float
    total: float


def file_floor(directory: Path, n: int) -> FileFloor:
    """What ``n`` agents' file operations cost as plain os calls in ``directory`` (`FileFloor`)."""
    directory.mkdir(parents=True)
    header = b"# agent\n\n- task: agent\n- kind: scripted\n\n## Progress\n\n" * 2
    line = b'{"event": "started", "detail": "scripted (0 steps)", "t": 1700000000.123456}\n'
    new = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    append = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    journal = os.open(directory / "journal.jsonl", new | os.O_APPEND, 0o644)
    t0 = time.perf_counter()
    try:
        for i in range(n):
            for name, text in ((f"a{i}.md", header), (f"a{i}.events.jsonl", b"")):
                fd = os.open(directory / name, new, 0o644)
                os.write(fd, text)
                os.close(fd)
            os.write(journal, line * 2)
        starts = (time.perf_counter() - t0) / n
        for _ in range(2):
            os.write(journal, line)
        for i in range(n):
            for name in (f"a{i}.md", f"a{i}.events.jsonl"):
                fd = os.open(directory / name, append)
                os.write(fd, line * 3)
                os.close(fd)
            os.write(journal, line)
        return FileFloor(starts, (time.perf_counter() - t0) / n)
    finally:
        os.close(journal)
        cleanup(directory)


# --- B4 -----------------------------------------------------------------------------------------


async def measure_b4(cfg: Config) -> Figure:
    fig = Figure("B4", "concurrency: agents sleeping at once")
    n = cfg.pick(10000, 300)
    ideal = cfg.pick(5.0, 0.3)
    places = [("scratch dir", cfg.tmp)]
    shm = tmpfs_dir()
    if shm is not None:  # the same runs with the file system out of the time
        places.append(("tmpfs", shm))
    at: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in places}
    serial: dict[str, float] = {}
    try:
        for _ in range(min(cfg.repeats, 2)):  # alternated: both places see the same machine
            for label, where in places:
                at[label].append(await _child("orchestrator", n, ideal, where))
        for label, where in places:  # the last agent acts once every start before it is made
            serial[label] = 1 + n * file_floor(where / "floor-b4", n).starts / ideal
    finally:
        for _, where in places[1:]:
            cleanup(where)
    orch = [r for runs in at.values() for r in runs]
    bare = [await _child("bare", n, ideal, cfg.tmp)]
    bare_walls = Stat.of(r["wall"] / ideal for r in bare)
    bare_delta = Stat.of(r["idle_rss"] - r["rss_before"] for r in bare).median
    # Sampled with every agent asleep and the writer caught up: where the writer could not
    # catch up before the first agent ended (a slow disk), the other place's runs say it.
    qualified = [r for r in orch if r["all_idle"]]
    idle = qualified or orch
    per_agent = Stat.of((r["idle_rss"] - r["rss_before"] - bare_delta) / n for r in idle)
    at_burst = Stat.of((r["burst_rss"] - r["rss_before"] - bare_delta) / n for r in orch)
    backlog = Stat.of(r.get("backlog", 0) for r in orch)
    bare_per = bare_delta / n
    walls: dict[str, Stat] = {}
    for label, runs in at.items():
        walls[label] = over = Stat.of(r["wall"] / ideal for r in runs)
        fig.row(
            f"{n:,} agents sleeping {ideal:g} s, files in {label}",
            measured=Stat.of(r["wall"] for r in runs).fmt(lambda v: f"{v:.2f} s"),
            baseline=(
                f"ideal {ideal:g} s; bare {bare_walls.fmt(times)}; "
                f"serial starts {times(serial[label])}"
            ),
            ratio=over.fmt(times),
            goal=f"<= {B4_GOAL_TIME:g}x ideal",
            met=over.median <= B4_GOAL_TIME,
            note=(
                f"all {n:,} running at once: {all(r['peak'] == n for r in runs)}; longest "
                f"event-loop stall {Stat.of(r['lag_max'] for r in runs).fmt(ms)} "
                f"(bare {Stat.of(r['lag_max'] for r in bare).fmt(ms)}); serial starts: the "
                "ideal plus every agent's start record and files created one after another "
                "at the file floor's cost (B1's)"
            ),
        )
    stall = Stat.of(r["lag_max"] for r in orch)
    fig.row(
        "longest event-loop stall, the runs of both places",
        measured=stall.fmt(ms),
        baseline=f"bare {Stat.of(r['lag_max'] for r in bare).fmt(ms)}",
        goal=f"<= {ms(B4_GOAL_STALL)}",
        met=stall.median <= B4_GOAL_STALL,
    )
    fig.row(
        "memory per idle agent beyond bare",
        measured=per_agent.fmt(kib),
        baseline=f"bare {kib(bare_per)}/task",
        ratio="-",
        goal=f"<= {kib(B4_GOAL_BYTES)}",
        met=per_agent.median <= B4_GOAL_BYTES,
        note=(
            "RSS while every agent sleeps and the writer thread has carried out every write, "
            "minus RSS before the run, in a fresh process: the runs where that came before "
            f"the first agent's end ({len(qualified)} of {len(orch)})"
        ),
    )
    fig.row(
        "memory per agent as the last one starts, the writer's backlog held",
        measured=at_burst.fmt(kib),
        baseline=f"bare {kib(bare_per)}/task",
        ratio="-",
        goal="-",
        met=None,
        note=(
            "RSS once every agent has said it started, the runs of both places; writes "
            f"not yet carried out then: {backlog.fmt(lambda v: f'{v:,.0f}')}"
        ),
    )
    fig.data = {
        "agents": n,
        "ideal": ideal,
        "orchestrator": at,
        "bare": bare,
        "over_ideal": {label: w.as_json() for label, w in walls.items()},
        "serial_starts_over_ideal": serial,
        "bytes_per_idle_agent_beyond_bare": per_agent.as_json(),
        "bytes_per_agent_at_burst_beyond_bare": at_burst.as_json(),
        "bare_bytes_per_task": bare_per,
    }
    return fig


async def _child(kind: str, n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.overhead", "child", kind, str(n), str(seconds), str(tmp),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"B4 child ({kind}) exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _child_main(kind: str, n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    """In a fresh process: run ``n`` tasks that each sleep ``seconds``; sample RSS mid-sleep."""
    tasks = tuple(Task(f"s{i}", agent="scripted", script=(Sleep(seconds),)) for i in range(n))
    graph = {t.id: () for t in tasks}
    durations = dict.fromkeys(graph, seconds)
    # Warm up: import and run the code paths once so that both sides start from the same place.
    warm = await run_orchestrator(tasks[:20], tmp=tmp, limits=wide_limits(20))
    cleanup(warm.responses)
    await run_bare({"w": ()}, {"w": 0.0})
    before = rss_bytes()
    result: dict[str, Any] = {"kind": kind, "rss_before": before}
    runs: list[Run] = []
    t0 = time.perf_counter()

    async def sample() -> None:
        """RSS once every agent sleeps (each has said it started) and, again, once the
        writer thread has also carried out every write of that burst; none has ended yet."""
        result["all_idle"] = True
        if kind == "bare":
            await asyncio.sleep(seconds * 0.5)  # the bare loop starts every task at once
            result["burst_rss"] = result["idle_rss"] = rss_bytes()
            return
        started = False
        while True:
            agents = runs[0].agents if runs else {}
            if any(r.state != "running" for r in agents.values()):
                result["all_idle"] = False  # the first ended before the rest were idle
                break
            if not started and len(agents) == n and all(r.lines for r in agents.values()):
                started = True
                result["burst_rss"] = rss_bytes()
                result["backlog"] = runs[0].recorder.writer.pending
            if started and not runs[0].recorder.writer.pending:
                break
            await asyncio.sleep(0.02)
        result.setdefault("burst_rss", rss_bytes())
        result["idle_rss"] = rss_bytes()
        result["sampled_after"] = time.perf_counter() - t0

    async with LagProbe(0.01) as lag, asyncio.TaskGroup() as tg:
        tg.create_task(sample())
        main: asyncio.Task[float] | asyncio.Task[Outcome]
        if kind == "bare":
            main = tg.create_task(run_bare(graph, durations))
        else:
            main = tg.create_task(
                run_orchestrator(tasks, tmp=tmp, limits=wide_limits(n), during=runs.append)
            )
    got = main.result()
    result["lag_max"] = max(lag.samples, default=0.0)
    if isinstance(got, float):
        result["wall"], result["peak"] = got, n
    else:
        result["wall"], result["peak"] = got.wall, got.run.governor.peak_running
        cleanup(got.responses)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "child":
        _, _, kind, n, seconds, tmp = sys.argv
        print(json.dumps(asyncio.run(_child_main(kind, int(n), float(seconds), Path(tmp)))))
    else:
        sys.exit("usage: python -m bench.overhead child KIND N SECONDS TMP")
