"""B18: views cost what the screen shows. The same run of 10,000 scripted agents (heavy-tailed
sleeps, all at once) three ways, one after the other and repeated: without a view, under the
live table (drawn into a 120x50 terminal in memory), and with the ``--no-live`` plain lines
(written to /dev/null); then the end-of-run summary of its 10,000 tasks.

What a view costs is the CPU time (of the loop's thread) spent in it: building the frame's
snapshot, laying out the table and drawing it (`live.live_view`, `dashboard.render`,
``Live.update``), or gathering and writing plain lines (`PlainPrinter`), timed by wrappers
installed for the measurement only, as a share of the whole run's process CPU time (user
plus system, all threads; on a loaded machine CPU time moves far less than wall time). The
run without a view is the baseline. The summary is timed alone.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import resource
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from rich.console import Console
from rich.live import Live

from bench.core import Config, Figure, Stat, secs
from bench.workloads import cleanup, independent, run_orchestrator, sleep_tasks, wide_limits
from orchestrator.engine.scheduler import Run
from orchestrator.view import console, dashboard, live, snapshot

GOAL_SHARE = 0.05


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def _timed(spent: list[float]) -> Iterator[None]:
    """Add the loop thread's CPU time in every view function to ``spent[0]``."""
    targets: list[tuple[Any, str]] = [
        (live, "live_view"),
        (dashboard, "render"),
        (Live, "update"),
        (console.PlainPrinter, "__call__"),
        (console.PlainPrinter, "flush"),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                spent[0] += time.thread_time() - t0

        return timed

    for obj, name, fn in saved:
        setattr(obj, name, wrap(fn))
    try:
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def _terminal() -> Console:
    return Console(file=io.StringIO(), width=120, height=50, force_terminal=True)


async def _cpu_of(cfg: Config, n: int, how: str) -> tuple[float, float]:
    """The run's process CPU time and the part of it spent in the view."""
    tasks = sleep_tasks(independent(n, seed=cfg.seed, scale=cfg.pick(1.0, 0.5)))
    drive: Callable[[Run], Awaitable[None]] | None = None
    printer = None
    sink = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 (closed below)
    if how == "live":

        def drive(run: Run) -> Awaitable[None]:
            return console.run_live(run, console=_terminal())

    elif how == "plain":
        printer = console.PlainPrinter(sink)
    spent = [0.0]
    with _timed(spent):
        t0 = _cpu()
        out = await run_orchestrator(
            tasks, tmp=cfg.tmp, limits=wide_limits(n), drive=drive, on_event=printer
        )
        if printer is not None:
            printer.flush()
        used = _cpu() - t0
    sink.close()
    if how == "none":
        t1 = time.perf_counter()
        snap = snapshot.from_run(out.run, state="finished")
        _terminal().print(dashboard.summary(snap, max_rows=50))
        _SUMMARY.append(time.perf_counter() - t1)
    cleanup(out.responses)
    return used, spent[0]


_SUMMARY: list[float] = []


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B18", "views at fleet scale")
    n = cfg.pick(10000, 1000)
    _SUMMARY.clear()
    cpu: dict[str, list[float]] = {"none": [], "live": [], "plain": []}
    view: dict[str, list[float]] = {"none": [], "live": [], "plain": []}
    await _cpu_of(cfg, 100, "live")  # warm up: imports, the first Live
    for _ in range(cfg.repeats):
        for how in cpu:
            used, spent = await _cpu_of(cfg, n, how)
            cpu[how].append(used)
            view[how].append(spent)
    base = Stat.of(cpu["none"])
    data: dict[str, Any] = {"cpu": cpu, "view": view, "summary": _SUMMARY}
    for how, what in (("live", "live table"), ("plain", "--no-live lines")):
        share = Stat.of(v / c for v, c in zip(view[how], cpu[how], strict=True))
        fig.row(
            f"{what}, {n:,} agents",
            measured=f"view CPU {Stat.of(view[how]).fmt(secs)} of {Stat.of(cpu[how]).fmt(secs)}",
            baseline=f"no view: run CPU {base.fmt(secs)}",
            ratio=share.fmt(lambda v: f"{v * 100:.1f}%"),
            goal=f"<= {GOAL_SHARE * 100:.0f}% of the run's CPU",
            met=share.median <= GOAL_SHARE,
            note="share = CPU in the view's functions / the run's process CPU",
        )
    fig.row(
        f"end-of-run summary of {n:,} tasks",
        measured=Stat.of(_SUMMARY).fmt(secs),
        baseline=f"no view: run CPU {base.fmt(secs)}",
        goal="a screenful (50 rows), failures first",
        note="the whole list is in REPORT.md",
    )
    fig.data = data
    return {"B18": fig}
