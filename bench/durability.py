"""B10: durability cost. What the journal adds per state transition, and how soon it is durable.

- Per event: ``Journal.record`` of a typical transition record, timed in a tight loop; and
  in a run, (run with the journal - run without it) / records written.
- fsyncs: every ``os.fsync`` during a run is timed by a wrapper installed for the
  measurement only (the journal looks ``os.fsync`` up at call time), so the count of fsyncs
  and, for every record, the time from ``record()`` (its ``t``) to the end of the first
  fsync that began after it (*time to durable*) are measured, not inferred.
- A what-if: the same run with a group-commit syncer thread (a prototype subclass kept
  here, see `GroupCommitJournal`) to show what tying the fsync to the event loop costs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, ms, percentile, us
from bench.workloads import cleanup, independent, run_orchestrator, sleep_tasks, wide_limits
from orchestrator.plan.model import Task
from orchestrator.records.journal import Journal

GOAL_EVENT = 15e-6
GOAL_DURABLE = 0.015


class GroupCommitJournal(Journal):
    """Prototype: a syncer *thread* that fsyncs as soon as something is dirty, coalescing
    whatever arrives during an fsync; unlike the loop's periodic syncer, an event loop that
    is busy starting thousands of agents cannot delay it.

    Not used by the orchestrator; measured here to size the alternative.
    """

    def __init__(self, path: Path, *, fresh: bool, interval: float = 0.05) -> None:
        super().__init__(path, fresh=fresh, interval=interval)
        self._wake = threading.Condition()
        self._stopping = False

    def record(self, rec_type: str, /, **fields: Any) -> None:
        super().record(rec_type, **fields)
        with self._wake:
            self._wake.notify()

    def _sync_forever(self) -> None:
        while True:
            with self._wake:
                while not self._dirty and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                self._dirty = False
                fd = self._fd
            if fd is not None:
                os.fsync(fd)

    async def run_syncer(self) -> None:
        try:
            await asyncio.to_thread(self._sync_forever)
        finally:
            with self._wake:
                self._stopping = True
                self._wake.notify()
            self.sync()


@contextlib.contextmanager
def timed_fsyncs() -> Iterator[list[tuple[float, float]]]:
    """Record (start, end) wall-clock times of every os.fsync while the block runs."""
    calls: list[tuple[float, float]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        start = time.time()
        real(fd)
        calls.append((start, time.time()))

    os.fsync = fsync  # type: ignore[assignment]
    try:
        yield calls
    finally:
        os.fsync = real


def record_cost(path: Path, n: int) -> float:
    """Seconds per ``Journal.record`` of a typical end-of-agent record."""
    journal = Journal(path, fresh=True)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            journal.record(
                "agent", id=f"t{i}", state="succeeded", reason="", ended=1.7e9 + i,
                tokens_in=0, tokens_out=0, cost_usd=0.0, last_line="finished", summary="",
            )  # fmt: skip
        return (time.perf_counter() - t0) / n
    finally:
        journal.close()
        path.unlink()


def durable_latencies(journal: Path, fsyncs: list[tuple[float, float]]) -> list[float]:
    """For every record: seconds from its ``t`` to the end of the first fsync begun after it."""
    calls = sorted(fsyncs)
    starts = [s for s, _ in calls]
    out = []
    for line in journal.read_bytes().splitlines():
        t = float(json.loads(line)["t"])
        i = bisect.bisect_left(starts, t)
        if i < len(calls):
            out.append(calls[i][1] - t)
    return out


async def durable_run(cfg: Config, tasks: tuple[Task, ...], *, group: bool) -> dict[str, Any]:
    with timed_fsyncs() as calls:
        out = await run_orchestrator(
            tasks,
            tmp=cfg.tmp,
            limits=wide_limits(len(tasks)),
            journal_factory=(lambda p: GroupCommitJournal(p, fresh=True)) if group else None,
        )
    lat = durable_latencies(out.responses / ".run" / "journal.jsonl", calls)
    lat.sort()
    result = {
        "records": out.journal_records,
        "fsyncs": len(calls),
        "wall": out.wall,
        "p50": lat[len(lat) // 2],
        "p99": lat[min(int(len(lat) * 0.99), len(lat) - 1)],
        "max": lat[-1],
        "fsync_p50": percentile([e - s for s, e in calls], 50),
        "fsync_max": max(e - s for s, e in calls),
    }
    cleanup(out.responses)
    return result


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B10", "durability cost")
    n_records = cfg.pick(20000, 5000)
    per_record = Stat.of(
        record_cost(cfg.tmp / f"journal-{i}.jsonl", n_records)
        for i in range(cfg.pick(cfg.repeats + 2, 2))
    )
    # In a run: the same zero-work agents as B2, with and without the journal.
    n = cfg.pick(1000, 200)
    zero = tuple(Task(f"z{i}", agent="scripted") for i in range(n))
    deltas = []
    for _ in range(cfg.repeats):
        with_j = await run_orchestrator(zero, tmp=cfg.tmp, limits=wide_limits(n))
        cleanup(with_j.responses)
        without = await run_orchestrator(zero, tmp=cfg.tmp, limits=wide_limits(n), journal=False)
        cleanup(without.responses)
        deltas.append((with_j.wall - without.wall) / with_j.journal_records)
    in_run = Stat.of(deltas)
    fig.row(
        "journal write per transition",
        measured=per_record.fmt(us),
        baseline="no journal",
        goal=f"<= {us(GOAL_EVENT)}",
        met=per_record.median <= GOAL_EVENT,
        note=f"in a run of {n:,} zero-work agents, with - without journal: "
        f"{in_run.fmt(us)} per record",
    )
    # Spread-out transitions: heavy-tailed sleeps, so records arrive all through the run.
    work = independent(cfg.pick(1000, 100), seed=cfg.seed, scale=cfg.pick(1.0, 0.5))
    tasks = sleep_tasks(work)
    runs = [await durable_run(cfg, tasks, group=False) for _ in range(cfg.repeats)]
    group = await durable_run(cfg, tasks, group=True)
    interval = float(inspect.signature(Journal).parameters["interval"].default)
    allowed = [int(r["wall"] / interval) + 3 for r in runs]
    fsync_ok = all(r["fsyncs"] <= a for r, a in zip(runs, allowed, strict=True))
    fig.row(
        "fsyncs per run",
        measured=f"{runs[0]['fsyncs']} for {runs[0]['records']:,} records",
        baseline=f"1 per {ms(interval)} interval",
        goal="never one per event",
        met=fsync_ok,
        note=(
            f"one fsync took {ms(runs[0]['fsync_p50'])} (p50), {ms(runs[0]['fsync_max'])} "
            "(max) on this disk"
        ),
    )
    p99 = Stat.of(r["p99"] for r in runs)
    fig.row(
        "p99 record -> durable",
        measured=p99.fmt(ms),
        baseline=f"syncer interval {ms(interval)}",
        goal=f"<= {ms(GOAL_DURABLE)}",
        met=p99.median <= GOAL_DURABLE,
        note=(
            f"p50 {Stat.of(r['p50'] for r in runs).fmt(ms)}; what-if group-commit "
            f"thread (bench prototype): p99 {ms(group['p99'])}, p50 {ms(group['p50'])}, "
            f"{group['fsyncs']} fsyncs "
            f"for {group['records']:,} records"
        ),
    )
    fig.data = {
        "record_cost": per_record.as_json(),
        "records_per_micro_run": n_records,
        "in_run_cost_per_record": in_run.as_json(),
        "interval": interval,
        "runs": runs,
        "group_commit_prototype": group,
    }
    return {"B10": fig}
