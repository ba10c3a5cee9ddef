"""The pool of checkouts: git worktrees outside the user's tree, leased, recycled, bounded.

A slot is a linked worktree ``<pool root>/slot-NN``. Leasing one locks it in git (``worktree
lock`` with a reason naming the run, the agent, our pid and its start time) under the
`RepoLock`, so two orchestrators never take the same slot and parallel creations never race.
A free slot is recycled (``checkout -f -B`` + ``clean -fd``: ignored caches stay warm) instead
of created; a slot is created only when every slot is leased. A lease whose orchestrator died
(its pid gone, or alive with another start time) is stale: its work is sealed as a WIP commit
on its branch before the slot is reused. Nothing here deletes a slot (see `gc`).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RunError
from orchestrator.isolation.locks import RepoLock
from orchestrator.isolation.repo import Repo
from orchestrator.isolation.seal import seal_wip
from orchestrator.process import procfs

_REASON = re.compile(r"orchestrator run=(\S+) agent=(\S+) pid=(\d+) start=(\d+)")


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None
    locked: str | None
    """The lock's reason ("" when locked without one); None when not locked."""


@dataclass(frozen=True)
class Lease:
    slot: Path
    branch: str
    base: str
    created: bool


def owner_alive(reason: str) -> bool:
    """Whether the orchestrator named in a slot's lock reason is still the same process."""
    found = _REASON.search(reason)
    if found is None:
        return True  # not ours, or a lock someone made by hand: leave it alone
    pid, start = int(found.group(3)), int(found.group(4))
    return procfs.process_start_time(pid) == start


class SlotPool:
    """Checkouts of ``repo`` for one run; at most ``max_slots`` leased at once by it."""

    def __init__(self, repo: Repo, *, run_id: str, max_slots: int) -> None:
        self.repo = repo
        self.run_id = run_id
        self.max_slots = max_slots
        self.lock = RepoLock(repo.lock_path)
        self.leased: dict[Path, str] = {}
        self._me = f"pid={os.getpid()} start={procfs.process_start_time(os.getpid()) or 0}"

    def reason(self, agent: str) -> str:
        return f"orchestrator run={self.run_id} agent={agent} {self._me} at={int(time.time())}"

    async def worktrees(self) -> list[Worktree]:
        out = (await self.repo.git.run("worktree", "list", "--porcelain")).out
        found: list[Worktree] = []
        for block in out.strip().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                fields[key] = value
            if "worktree" not in fields:
                continue
            branch = fields.get("branch", "").removeprefix("refs/heads/") or None
            found.append(
                Worktree(Path(fields["worktree"]), fields.get("HEAD"), branch, fields.get("locked"))
            )
        return found

    async def ours(self) -> list[Worktree]:
        root = self.repo.pool_root
        return [w for w in await self.worktrees() if w.path.parent == root]

    async def lease(self, agent: str, base: str, *, branch: str) -> Lease:
        """A checkout at ``base`` on a new ``branch``, locked for ``agent``."""
        if len(self.leased) >= self.max_slots:
            raise RunError(f"error: the run already holds {self.max_slots} checkouts")
        git = self.repo.git
        async with self.lock.held():
            free: Path | None = None
            names = set()
            for wt in await self.ours():
                names.add(wt.path.name)
                if wt.path in self.leased or not wt.path.is_dir():
                    continue
                if wt.locked is not None and owner_alive(wt.locked):
                    continue
                if wt.locked is not None:  # its orchestrator died: keep its work first
                    await seal_wip(git, wt.path, note="interrupted")
                    await git.run("worktree", "unlock", str(wt.path))
                free = wt.path
                break
            if free is not None:
                await git.run("worktree", "lock", "--reason", self.reason(agent), str(free))
                self.leased[free] = agent
            else:
                await asyncio.to_thread(self.repo.pool_root.mkdir, parents=True, exist_ok=True)
                n = 0
                while f"slot-{n:02d}" in names or (self.repo.pool_root / f"slot-{n:02d}").exists():
                    n += 1
                path = self.repo.pool_root / f"slot-{n:02d}"
                await git.run("worktree", "prune")
                await git.run(
                    "worktree", "add", "-q", "--no-track", "--lock", "--reason",
                    self.reason(agent), "-B", branch, str(path), base,
                )  # fmt: skip
                self.leased[path] = agent
                return Lease(path, branch, base, True)
        try:
            await git.run("checkout", "-q", "-f", "--no-track", "-B", branch, base, at=free)
            await git.run("clean", "-fdq", at=free)
        except BaseException:
            await self.release(free)
            raise
        return Lease(free, branch, base, False)

    async def reclaim(self) -> list[Path]:
        """Seal and unlock the checkouts of this run whose orchestrator died (on resume)."""
        found = []
        async with self.lock.held():
            for wt in await self.ours():
                mine = wt.locked is not None and f"run={self.run_id} " in wt.locked
                if mine and wt.locked is not None and not owner_alive(wt.locked):
                    if wt.path.is_dir():
                        await seal_wip(self.repo.git, wt.path, note="interrupted")
                    await self.repo.git.run("worktree", "unlock", str(wt.path))
                    found.append(wt.path)
        return found

    async def release(self, slot: Path, *, keep: str | None = None) -> None:
        """Give ``slot`` back to the pool; with ``keep`` it stays locked (for a person)."""
        git = self.repo.git
        async with self.lock.held():
            self.leased.pop(slot, None)
            if keep is not None:
                await git.run("worktree", "unlock", str(slot), check=False)
                await git.run("worktree", "lock", "--reason", f"kept: {keep}", str(slot))
            else:
                await git.run("worktree", "unlock", str(slot), check=False)


def disk_use(root: Path) -> tuple[int, int]:
    """(checkouts, bytes) of a pool directory; blocking (``status`` runs it off any loop)."""
    slots = 0
    total = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0, 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        slots += 1
        for dirpath, _dirs, files in os.walk(entry.path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
    return slots, total
