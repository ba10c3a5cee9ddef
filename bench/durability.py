"""B10: durability cost. What the journal adds per state transition, and how soon it is durable.

- Per event: ``Journal.record`` of a typical transition record, timed in a tight loop; and
  in a run, (run with the journal - run without it) / records written.
- fsyncs: every ``os.fsync`` during a run is timed by a wrapper installed for the
  measurement only (the journal looks ``os.fsync`` up at call time), which also notes the
  file's size when the fsync began, so the count of fsyncs and, for every record, the time
  from ``record()`` (its ``t``) to the end of the first fsync that began once the record's
  bytes were in the file (*time to durable*) are measured, not inferred. The journal writes
  on the run's writer thread and fsyncs on a group-commit thread of its own.

  The size at an fsync's start is the journal's own count of the bytes it has written
  (`Journal.size`), not an ``fstat``: an ``fstat`` in the wrapper is one more system call
  on the syncing thread, and every system call gives up the interpreter lock, which that
  thread then waits to get back, up to a switch interval (5 ms) while the loop is busy: the
  wrapper itself held the fsync back by that much in a burst. The count is conservative: it
  grows once a write has returned, so it never covers bytes not yet in the file. The end of
  an fsync is still read once the thread holds the lock again (it can be no sooner).
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import itertools
import json
import os
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


@contextlib.contextmanager
def timed_fsyncs(
    journals: dict[int, Journal] | None = None,
) -> Iterator[list[tuple[float, float, int]]]:
    """Record (start, end, file size at start) of every os.fsync while the block runs; the
    size of a journal in ``journals`` (by descriptor) is its own count (see the module)."""
    calls: list[tuple[float, float, int]] = []
    real = os.fsync
    known = {} if journals is None else journals

    def fsync(fd: int) -> None:
        start = time.time()
        journal = known.get(fd)
        size = journal.size if journal is not None else os.fstat(fd).st_size
        real(fd)
        calls.append((start, time.time(), size))

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


def durable_latencies(journal: Path, fsyncs: list[tuple[float, float, int]]) -> list[float]:
    """For every record: seconds from its ``t`` to the end of the first fsync that began
    with the record's bytes in the file (its size at the fsync's start covers the record)."""
    calls = sorted(fsyncs)
    sizes = list(itertools.accumulate((c[2] for c in calls), max))
    out = []
    end = 0
    for line in journal.read_bytes().splitlines(keepends=True):
        end += len(line)
        t = float(json.loads(line)["t"])
        i = bisect.bisect_left(sizes, end)
        if i < len(calls):
            out.append(calls[i][1] - t)
    return out


async def durable_run(cfg: Config, tasks: tuple[Task, ...]) -> dict[str, Any]:
    journals: dict[int, Journal] = {}

    def journal(path: Path) -> Journal:
        made = Journal(path, fresh=True)
        journals[made.fileno()] = made
        return made

    with timed_fsyncs(journals) as calls:
        out = await run_orchestrator(
            tasks, tmp=cfg.tmp, limits=wide_limits(len(tasks)), journal_factory=journal
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
        "fsync_p50": percentile([c[1] - c[0] for c in calls], 50),
        "fsync_max": max(c[1] - c[0] for c in calls),
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
    runs = [await durable_run(cfg, tasks) for _ in range(cfg.repeats)]
    interval = float(inspect.signature(Journal).parameters["interval"].default)
    allowed = [int(r["wall"] / interval) + 3 for r in runs]
    fsync_ok = all(r["fsyncs"] <= a for r, a in zip(runs, allowed, strict=True))
    fig.row(
        "fsyncs per run",
        measured=f"{runs[0]['fsyncs']} for {runs[0]['records']:,} records",
        baseline=f"at most 1 per {ms(interval)}",
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
        baseline=f"group commit, fsyncs at most {ms(interval)} apart",
        goal=f"<= {ms(GOAL_DURABLE)}",
        met=p99.median <= GOAL_DURABLE,
        note=f"p50 {Stat.of(r['p50'] for r in runs).fmt(ms)}",
    )
    fig.data = {
        "record_cost": per_record.as_json(),
        "records_per_micro_run": n_records,
        "in_run_cost_per_record": in_run.as_json(),
        "interval": interval,
        "runs": runs,
    }
    return {"B10": fig}
