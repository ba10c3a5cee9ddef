"""B14: what a checkout of its own costs each task, on a generated repository of 10,000 files.

Side by side in one run: a task's work done in place (write a file in the repository's own
checkout) against the same work done in isolation (lease a warm pool slot, write, seal,
land, release). Landing is timed on its own, both on the fast path (nothing landed since the
task started) and through an in-memory merge. Disk: many tasks through a pool of
max_concurrency + 1 slots; the slots created are counted, not assumed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.core import Config, Figure, Stat, ms, secs
from orchestrator.isolation.landing import LandingQueue
from orchestrator.isolation.pool import SlotPool, disk_use
from orchestrator.isolation.repo import open_repo
from orchestrator.isolation.seal import seal

GOAL_TASK = 0.5
GOAL_LAND = 0.05


def _make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    for i in range(files):
        d = repo / f"pkg{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i}.py").write_text(f"VALUE_{i} = {i}\n" * 4)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.check_call(["git", *args], cwd=repo, env=env)
    return repo


async def _measure(cfg: Config) -> dict[str, Any]:
    files = cfg.pick(10_000, 2_000)
    tasks = cfg.pick(12, 4)
    concurrency = 3
    os.environ.setdefault("XDG_CACHE_HOME", str(cfg.tmp / "xdg-cache"))
    os.environ.setdefault("XDG_STATE_HOME", str(cfg.tmp / "xdg-state"))
    repo_dir = await asyncio.to_thread(_make_repo, cfg.tmp / "b14", files)
    repo = await open_repo(repo_dir)
    git = repo.git
    head = await git.out("rev-parse", "HEAD")
    run_id = "bench"
    ref = f"refs/orchestrator/{run_id}/integration"
    await git.run("update-ref", ref, head)
    pool = SlotPool(repo, run_id=run_id, max_slots=concurrency + 1)
    queue = LandingQueue(git, run_id, state_dir=repo.state)

    t0 = time.perf_counter()
    first = await pool.lease("warm", head, branch="orchestrator/work/bench/warm")
    fresh_add = time.perf_counter() - t0
    await pool.release(first.slot)

    in_place: list[float] = []
    isolated: list[float] = []
    land_fast: list[float] = []
    land_merge: list[float] = []
    for n in range(tasks):
        t0 = time.perf_counter()
        await asyncio.to_thread((repo_dir / f"inplace{n}.txt").write_text, f"task {n}\n")
        in_place.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        base = await queue.tip()
        lease = await pool.lease(f"t{n}", base, branch=f"orchestrator/work/bench/t{n}")
        await asyncio.to_thread((lease.slot / f"task{n}.txt").write_text, f"task {n}\n")
        sealed = await seal(git, lease.slot, branch=lease.branch, base=base, message=f"t{n}")
        if n % 2:  # someone landed since this task started: the in-memory merge path
            other = await git.commit_tree(
                await git.out("rev-parse", f"{base}^{{tree}}"), [base], "moved"
            )
            await git.run("update-ref", ref, other, base)
        t1 = time.perf_counter()
        await queue.land(f"t{n}", agent=f"t{n}", kind="bench", title="bench", summary="",
                         tip=sealed.tip, base=base)  # fmt: skip
        landed = time.perf_counter() - t1
        (land_merge if n % 2 else land_fast).append(landed)
        await pool.release(lease.slot)
        isolated.append(time.perf_counter() - t0)

    # Disk: many tasks, at most `concurrency` at once, through the pool.
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with sem:
            lease = await pool.lease(f"d{n}", head, branch=f"orchestrator/work/bench/d{n}")
            await pool.release(lease.slot)

    async with asyncio.TaskGroup() as tg:
        for n in range(tasks * 2):
            tg.create_task(one(n))
    slots, size = await asyncio.to_thread(disk_use, repo.pool_root)
    return {
        "files": files, "tasks": tasks, "fresh_add": fresh_add, "in_place": in_place,
        "isolated": isolated, "land_fast": land_fast, "land_merge": land_merge,
        "slots": slots, "bytes": size, "concurrency": concurrency,
    }  # fmt: skip


def measure(cfg: Config, want: set[str]) -> dict[str, Figure]:
    fig = Figure("B14", "per-task isolation")
    d = asyncio.run(_measure(cfg))
    iso, place = Stat.of(d["isolated"]), Stat.of(d["in_place"])
    fig.row(
        f"lease+seal+land per task, warm pool, {d['files']} files",
        measured=iso.fmt(secs),
        baseline=f"in place {place.fmt(secs)}",
        ratio=f"+{secs(iso.median - place.median)}",
        goal=f"<= {secs(GOAL_TASK)}",
        met=iso.median <= GOAL_TASK,
        note=f"first slot (fresh worktree add) {secs(d['fresh_add'])}",
    )
    for key, what in (("land_fast", "nothing landed since"), ("land_merge", "merge-tree")):
        if d[key]:
            stat = Stat.of(d[key])
            fig.row(f"landing ({what})", measured=stat.fmt(ms), goal=f"<= {ms(GOAL_LAND)}",
                    met=stat.median <= GOAL_LAND)  # fmt: skip
    bound = d["concurrency"] + 1
    fig.row(
        f"disk after {d['tasks'] * 3 + 1} tasks, {d['concurrency']} at once",
        measured=f"{d['slots']} checkouts, {d['bytes'] / 1024**2:.0f} MB",
        goal=f"<= {bound} checkouts",
        met=d["slots"] <= bound,
    )
    fig.data = {k: v for k, v in d.items() if not isinstance(v, list)} | {
        "isolated": iso.as_json(), "in_place": place.as_json(),
    }  # fmt: skip
    return {"B14": fig}
