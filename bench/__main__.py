"""``python -m bench``: run the figures, print the table (or ``--json``, or ``--markdown``).

Each group of figures runs in a fresh event loop (``asyncio.run``) so that one figure's
leftovers (memory, timers, threads) do not bend the next one's numbers. A figure that fails
is reported as ERROR in its row and the exit code is 1; the other figures still run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import inspect
import io
import pstats
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    api,
    cancel,
    durability,
    flood,
    gateway,
    isolation,
    makespan,
    overhead,
    peers,
    sandbox,
    spawn,
    startup,
    table,
    views,
    web,
)
from bench.core import Config, Figure, machine

FIGURE_IDS = (*(f"B{i}" for i in range(1, 15)), "B17", "B18")
TITLES = {
    "B1": "makespan over critical path",
    "B2": "orchestration cost per agent",
    "B3": "start delay after the last dependency",
    "B4": "10,000 concurrent agents",
    "B5": "API fan-out",
    "B6": "progress throughput",
    "B7": "subprocess spawn overhead",
    "B8": "cancellation",
    "B9": "start-up",
    "B10": "durability cost",
    "B11": "model gateway",
    "B12": "web view under load",
    "B13": "sandbox start cost",
    "B14": "per-task isolation",
    "B17": "peers side by side",
    "B18": "views at fleet scale",
}
Measure = Callable[[Config, set[str]], Any]
GROUPS: tuple[tuple[tuple[str, ...], Measure], ...] = (
    (("B1", "B3"), makespan.measure),
    (("B2", "B4"), overhead.measure),
    (("B6",), flood.measure),
    (("B7",), spawn.measure),
    (("B8",), cancel.measure),
    (("B9",), startup.measure),
    (("B10",), durability.measure),
    (("B5",), api.measure),
    (("B11",), gateway.measure),
    (("B12",), web.measure),
    (("B13",), sandbox.measure),
    (("B14",), isolation.measure),
    (("B17",), peers.measure),
    (("B18",), views.measure),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="CI smoke run: small sizes, < 1 minute")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object keyed by figure id")
    out.add_argument("--markdown", action="store_true", help="the README performance table")
    p.add_argument("--only", default="", help="comma-separated figure ids, e.g. B1,B3")
    p.add_argument("--repeat", type=int, default=None, help="repeats per measurement")
    p.add_argument("--seed", type=int, default=8, help="seed of every workload")
    p.add_argument("--tmp", type=Path, default=None, help="scratch directory parent")
    p.add_argument("--profile", action="store_true", help="cProfile each group (to stderr)")
    p.add_argument(
        "--from",
        dest="saved",
        type=Path,
        default=None,
        help="render a run saved with --json instead of measuring (with --markdown or alone)",
    )
    return p.parse_args(argv)


def run_group(measure: Measure, cfg: Config, want: set[str], *, profile: bool) -> dict[str, Any]:
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    try:
        result = measure(cfg, want)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    finally:
        if prof is not None:
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
            sys.stderr.write(buf.getvalue())
    assert isinstance(result, dict)
    return result


def render_saved(args: argparse.Namespace) -> int:
    figures, info, mode = table.from_json(args.saved.read_text())
    if args.markdown:
        print(table.markdown(figures, info, mode=mode))
    elif args.json:
        print(table.as_json(figures, info, mode=mode))
    else:
        print(table.text(figures, info, mode=mode))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.saved is not None:
        return render_saved(args)
    want = {s.strip().upper() for s in args.only.split(",") if s.strip()} or set(FIGURE_IDS)
    unknown = want - set(FIGURE_IDS)
    if unknown:
        sys.stderr.write(f"error: unknown figure ids: {', '.join(sorted(unknown))}\n")
        return 2
    repeats = args.repeat or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="orchestrator-bench-", dir=args.tmp))
    cfg = Config(quick=args.quick, repeats=repeats, seed=args.seed, tmp=tmp)
    mode = "quick" if args.quick else "full"
    figures: dict[str, Figure] = {}
    t_start = time.perf_counter()
    try:
        for ids, measure in GROUPS:
            group = set(ids) & want
            if not group:
                continue
            t0 = time.perf_counter()
            sys.stderr.write(f"bench: {', '.join(sorted(group))} ...\n")
            try:
                got = run_group(measure, cfg, group, profile=args.profile)
            except Exception as exc:  # a broken figure is a row that says so; the rest still run
                traceback.print_exc(file=sys.stderr)
                got = {
                    fid: Figure(fid, TITLES[fid], error=f"{type(exc).__name__}: {exc}")
                    for fid in group
                }
            took = time.perf_counter() - t0
            for fid, fig in got.items():
                fig.seconds = took
                figures[fid] = fig
            sys.stderr.write(f"bench: {', '.join(sorted(group))} took {took:.1f} s\n")
            gc.collect()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ordered = [figures[f] for f in FIGURE_IDS if f in figures]
    info = machine()
    if args.json:
        print(table.as_json(ordered, info, mode=mode))
    elif args.markdown:
        print(table.markdown(ordered, info, mode=mode))
    else:
        print(table.text(ordered, info, mode=mode))
    sys.stderr.write(f"bench: total {time.perf_counter() - t_start:.1f} s\n")
    return 1 if any(f.error for f in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
