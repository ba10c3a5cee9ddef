"""B17: peers side by side. The same seeded DAG of ``sleep`` commands run by ``make -j``, by a
bare asyncio subprocess runner and by the orchestrator (its CLI, command agents), each in a
process of its own, one after the other in the same run.

- *In-run makespan*: from the runner's start of work to the end of its last task: ``make``'s
  wall time (it parses a Makefile of a few thousand lines in milliseconds), the bare runner's
  own clock, and for the orchestrator its journal (the run's ``started`` to the last agent's
  ``ended``), so interpreter start-up and imports are left out of every one.
- *Ideal*: list scheduling of the same DAG on the same number of slots with zero overhead
  (ready tasks start in plan order the moment a slot is free), simulated.
- *Peak RSS*: the largest sum of resident memory over the runner's whole process tree,
  sampled from /proc every 50 ms.

The orchestrator runs twice: as users get it (every agent in its own bubblewrap sandbox,
which its peers do not pay for) and with ``sandbox: off`` (the orchestrator alone). Where
this machine can make a sandbox, ``make`` runs twice too: the second time with each recipe
in bubblewrap, with the namespaces and mounts the plan's sandbox would get here (no cgroup,
no start handshake): the kernel's part of a sandbox, paid by a peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, secs, times
from bench.workloads import Workload, list_schedule, random_dag

GOAL_VS_MAKE = 1.03
BARE_RUNNER = r"""
import asyncio, json, sys, time
spec = json.load(open(sys.argv[1])); slots = int(sys.argv[2])
graph = {t: d for t, d in spec["graph"].items()}; dur = spec["durations"]
children = {t: [] for t in graph}
for t, deps in graph.items():
    for d in deps: children[d].append(t)
waiting = {t: len(d) for t, d in graph.items()}
async def main():
    sem = asyncio.Semaphore(slots)
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        async def run(t):
            async with sem:
                p = await asyncio.create_subprocess_exec("sleep", f"{dur[t]:.3f}")
                await p.wait()
            for c in children[t]:
                waiting[c] -= 1
                if waiting[c] == 0: tg.create_task(run(c))
        for t, n in waiting.items():
            if n == 0: tg.create_task(run(t))
    print(time.perf_counter() - t0)
asyncio.run(main())
"""

ORCHESTRATOR = (sys.executable, "-m", "orchestrator", "run", "--no-live", "--isolation", "none")
"""Then the plan: one shared directory, as `make` and the bare runner have (per-task
checkouts cost ~35 ms of serialised landing a task here; B14 measures them on their own)."""
RUNS = {"orchestrator": "plan.yaml", "unconfined": "plan-unconfined.yaml"}


def ideal(work: Workload, slots: int) -> float:
    """List scheduling with zero overhead: ready tasks start in plan order when a slot frees
    (each duration to the millisecond, as the peers' ``sleep`` command lines have it)."""
    return list_schedule(work.graph, {t: round(d, 3) for t, d in work.durations.items()}, slots)


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every descendant (from /proc; 0 for what is gone)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
                parent[int(name)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = {root}, [root]
    kids: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        kids.setdefault(ppid, []).append(pid)
    while todo:
        for kid in kids.get(todo.pop(), []):
            tree.add(kid)
            todo.append(kid)
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


async def _run_tree(argv: list[str], cwd: Path) -> tuple[float, int, str]:
    """Run ``argv``; its wall time, the peak RSS of its process tree, and its stdout."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    peak = 0
    async with asyncio.TaskGroup() as tg:
        talk = tg.create_task(proc.communicate())
        while not talk.done():
            peak = max(peak, await asyncio.to_thread(_tree_rss, proc.pid))
            await asyncio.wait({talk}, timeout=0.05)
    out, err = talk.result()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode()[-500:]}")
    return wall, peak, out.decode()


def _makefile(work: Workload) -> str:
    lines = [".PHONY: all " + " ".join(work.graph), "all: " + " ".join(work.graph)]
    for tid, deps in work.graph.items():
        lines.append(f"{tid}: {' '.join(deps)}".rstrip())
        lines.append(f"\tsleep {work.durations[tid]:.3f}")
    return "\n".join(lines) + "\n"


def _plan(work: Workload, slots: int, *, sandbox: str | None = None) -> str:
    limits = {"max_concurrency": slots, "max_agents": len(work) * 2 + 10, "spawn_rate": 1e6}
    tasks = [
        {
            "id": tid,
            "agent": "command",
            "command": ["sleep", f"{work.durations[tid]:.3f}"],
            "depends_on": list(deps),
        }
        for tid, deps in work.graph.items()
    ]
    plan = {"name": "peers", "workspace": ".", "limits": limits, "tasks": tasks}
    return json.dumps(plan if sandbox is None else {**plan, "sandbox": sandbox})


def _journal_makespan(responses: Path) -> float:
    started, last = None, 0.0
    for line in (responses / ".run" / "journal.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("k") == "run" and "started" in rec and started is None:
            started = float(rec["started"])
        if rec.get("k") == "agent" and rec.get("ended"):
            last = max(last, float(rec["ended"]))
    if started is None:
        raise RuntimeError("the journal has no run start")
    return last - started


def _sandboxed_makefile(work: Workload, where: Path) -> str | None:
    """The Makefile with every recipe in bubblewrap as the orchestrator's plan would confine
    it here (its namespaces and mounts; no cgroup, no start handshake): the kernel's part of
    a sandbox, paid by `make`. None when this machine cannot make a sandbox."""
    from orchestrator.plan.load import load_plan
    from orchestrator.sandbox.bwrap import bwrap_args
    from orchestrator.sandbox.decision import check

    conf = check(load_plan(where / "plan.yaml"), responses=where / "responses-make").confinement
    if conf is None:
        return None
    tmp = (where / "make-tmp").resolve()
    tmp.mkdir()
    wrap = shlex.join([conf.bwrap, *bwrap_args(conf, cwd=where.resolve(), tmp=tmp), "--"])
    return _makefile(work).replace("\tsleep ", f"\t{wrap} sleep ")


def _write_case(work: Workload, slots: int, where: Path) -> None:
    where.mkdir(parents=True)
    (where / "Makefile").write_text(_makefile(work))
    (where / "spec.json").write_text(json.dumps({"graph": work.graph, "durations": work.durations}))
    (where / "bare.py").write_text(BARE_RUNNER)
    (where / "plan.yaml").write_text(_plan(work, slots))  # JSON is YAML
    (where / "plan-unconfined.yaml").write_text(_plan(work, slots, sandbox="off"))
    sandboxed = _sandboxed_makefile(work, where)
    if sandboxed is not None:
        (where / "Makefile.sandboxed").write_text(sandboxed)


async def one_case(cfg: Config, work: Workload, slots: int, where: Path) -> dict[str, Any]:
    _write_case(work, slots, where)
    results: dict[str, dict[str, list[float]]] = {
        k: {"span": [], "rss": []} for k in ("make", "make_sandboxed", "bare", *RUNS)
    }
    make = shutil.which("make")
    makefiles = {"make": "Makefile", "make_sandboxed": "Makefile.sandboxed"}
    for i in range(cfg.repeats):
        for kind, makefile in makefiles.items():
            if make is None or not (where / makefile).exists():
                continue
            argv = [make, "-s", f"-j{slots}", "-f", makefile, "all"]
            wall, peak, _ = await _run_tree(argv, where)
            results[kind]["span"].append(wall)
            results[kind]["rss"].append(peak)
        _, peak, out = await _run_tree([sys.executable, "bare.py", "spec.json", str(slots)], where)
        results["bare"]["span"].append(float(out.strip()))
        results["bare"]["rss"].append(peak)
        for kind, plan in RUNS.items():
            responses = where / f"responses-{kind}-{i}"
            argv = [*ORCHESTRATOR, "--responses", str(responses), plan]
            _, peak, _ = await _run_tree(argv, where)
            results[kind]["span"].append(_journal_makespan(responses))
            results[kind]["rss"].append(peak)
            shutil.rmtree(responses, ignore_errors=True)
    return {"ideal": ideal(work, slots), **results}


async def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B17", "peers side by side")
    cases = cfg.pick(((500, 16), (2000, 64)), ((100, 8),))
    data = {}
    for n, slots in cases:
        work = random_dag(n, seed=cfg.seed, scale=cfg.pick(1.0, 0.5))
        got = await one_case(cfg, work, slots, cfg.tmp / f"peers-{n}-{slots}")
        data[f"{n}x{slots}"] = got
        best = got["ideal"]
        kinds = ("make", "make_sandboxed", "bare", *RUNS)
        spans = {k: Stat.of(got[k]["span"]) for k in kinds if got[k]["span"]}
        rss = {k: Stat.of(got[k]["rss"]) for k in spans}
        mib = lambda v: f"{v / 2**20:.0f} MiB"  # noqa: E731
        over = {k: Stat.of(v / best for v in s.values) for k, s in spans.items()}
        base = [f"ideal {secs(best)}"] + [
            f"{k} {over[k].fmt(times)}, {rss[k].fmt(mib)}" for k in ("make", "bare") if k in spans
        ]
        for kind, what in (("orchestrator", ""), ("unconfined", ", sandbox: off")):
            orch = spans[kind]
            if "make" in spans:
                vs = Stat.of(o / m for o, m in zip(orch.values, spans["make"].values, strict=True))
                ratio, met = f"{vs.fmt(times)} make", vs.median <= GOAL_VS_MAKE
            else:
                ratio, met = "-", None
            floor, peers = "", "; ".join(base)
            if not what and "make_sandboxed" in spans:  # the kernel's part, paid by make
                pairs = zip(orch.values, spans["make_sandboxed"].values, strict=True)
                peers += (
                    f"; make, each recipe in bubblewrap {over['make_sandboxed'].fmt(times)}, "
                    f"{rss['make_sandboxed'].fmt(mib)}"
                )
                floor = (
                    "; make with each recipe in bubblewrap as the plan would confine it here "
                    "(namespaces and mounts; no cgroup): the orchestrator "
                    f"{Stat.of(o / m for o, m in pairs).fmt(times)} that"
                )
            fig.row(
                f"{n:,}-task DAG of sleeps, {slots} at a time{what}",
                measured=f"{orch.fmt(secs)}: {over[kind].fmt(times)} ideal, {rss[kind].fmt(mib)}",
                baseline=peers,
                ratio=ratio,
                goal=f"<= {GOAL_VS_MAKE}x make -j",
                met=met,
                note="makespan in the run (start-up left out) over the list-scheduling ideal; "
                "peak RSS of the whole process tree; the orchestrator with --isolation none (one "
                "shared directory, like its peers)"
                + ("; every agent unconfined: what the sandbox costs is left out" if what else "")
                + floor,
            )
    fig.data = data
    return {"B17": fig}
