"""``orchestrator gc``: the only thing that removes checkouts and branches, and never work.

Checkouts leased by a live orchestrator, or kept for a person (a conflict it escalated), stay.
Any other checkout of the pool has what is in it sealed on its branch, then is removed. A
work branch whose sealed tip landed (named by a landing commit's ``Orchestrator-Task-Tip``)
or that holds nothing beyond its base is deleted; any other is first kept as
``refs/orchestrator/archive/<run>/<agent>`` (objects are shared: it costs nothing).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from orchestrator.isolation.pool import SlotPool, owner_alive
from orchestrator.isolation.repo import Repo
from orchestrator.isolation.seal import seal_wip

WORK = "refs/heads/orchestrator/work/"


@dataclass
class Collected:
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)


async def collect(repo: Repo, *, dry_run: bool) -> Collected:
    git = repo.git
    pool = SlotPool(repo, run_id="gc", max_slots=0)
    done = Collected()
    active_runs: set[str] = set()
    async with pool.lock.held():
        for wt in await pool.ours():
            reason = wt.locked
            if reason is not None and (reason.startswith("kept") or owner_alive(reason)):
                done.kept.append(f"checkout {wt.path} ({reason or 'locked'})")
                found = re.search(r"run=(\S+)", reason or "")
                if found:
                    active_runs.add(found.group(1))
                continue
            done.removed.append(f"checkout {wt.path}")
            if dry_run:
                continue
            if await asyncio.to_thread(wt.path.is_dir):
                await seal_wip(git, wt.path, note="gc")
            if reason is not None:
                await git.run("worktree", "unlock", str(wt.path), check=False)
            await git.run("worktree", "remove", "--force", str(wt.path))
        if not dry_run:
            await git.run("worktree", "prune")
        out = await git.out("for-each-ref", "--format=%(refname) %(objectname)", WORK)
        landed = await _landed_tips(repo)
        for line in out.splitlines():
            ref, _, tip = line.partition(" ")
            run, _, agent = ref.removeprefix(WORK).partition("/")
            if run in active_runs:
                done.kept.append(f"branch {ref.removeprefix('refs/heads/')} (its run is active)")
                continue
            base = await git.rev(f"refs/orchestrator/{run}/bases/{agent}")
            name = ref.removeprefix("refs/heads/")
            if tip not in landed and tip != base:
                done.archived.append(f"{name} -> refs/orchestrator/archive/{run}/{agent}")
                if not dry_run:
                    await git.run("update-ref", f"refs/orchestrator/archive/{run}/{agent}", tip)
            done.removed.append(f"branch {name}")
            if not dry_run:
                await git.run("update-ref", "-d", ref, tip)
    return done


async def _landed_tips(repo: Repo) -> set[str]:
    """Every tip a landing commit of any run names."""
    git = repo.git
    refs = await git.out("for-each-ref", "--format=%(refname)", "refs/orchestrator/*/integration")
    tips: set[str] = set()
    for ref in refs.splitlines():
        log = await git.out("log", "--format=%(trailers:key=Orchestrator-Task-Tip,valueonly)", ref)
        tips.update(t.strip() for t in log.splitlines() if t.strip())
    return tips
