"""The pool: parallel leases never race, slots are reused, gc never loses work."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest
from isohelp import git, make_repo

from orchestrator.isolation.gc import collect
from orchestrator.isolation.pool import SlotPool
from orchestrator.isolation.repo import open_repo


@pytest.mark.parametrize("seed", range(6))
async def test_eight_parallel_leases_never_fail_and_reuse_their_slots(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    repo_dir = make_repo(tmp_path / "repo", {f"f{i}.txt": f"{i}\n" for i in range(50)})
    repo = await open_repo(repo_dir)
    pool = SlotPool(repo, run_id=f"r{seed}", max_slots=8)
    head = git(repo_dir, "rev-parse", "HEAD").strip()

    async def one(n: int, rnd: int) -> Path:
        await asyncio.sleep(rng.random() / 50)
        lease = await pool.lease(
            f"a{rnd}-{n}", head, branch=f"orchestrator/work/r{seed}/a{rnd}-{n}"
        )
        (lease.slot / f"junk-{n}.txt").write_text("left behind\n")
        await asyncio.sleep(rng.random() / 50)
        await pool.release(lease.slot)
        return lease.slot

    for rnd in range(2):
        async with asyncio.TaskGroup() as tg:
            slots = [tg.create_task(one(n, rnd)) for n in range(8)]
        used = {s.result() for s in slots}
        assert len(used) <= 8
    created = [p for p in repo.pool_root.iterdir()]
    assert len(created) <= 8, "the second round reused the first round's slots"
    again = await pool.lease("last", head, branch=f"orchestrator/work/r{seed}/last")
    assert not list(again.slot.glob("junk-*")), "a recycled slot holds nothing of the last lease"


def test_two_processes_leasing_at_once_share_the_pool_without_a_lock_error(
    tmp_path: Path,
) -> None:
    repo_dir = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.isolation.pool import SlotPool\n"
        "from orchestrator.isolation.repo import open_repo\n"
        "async def main(tag):\n"
        "    repo = await open_repo(Path(sys.argv[1]))\n"
        "    pool = SlotPool(repo, run_id=tag, max_slots=4)\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        for n in range(4):\n"
        "            tg.create_task(pool.lease(f'{tag}{n}', 'HEAD', branch=f'w/{tag}/{n}'))\n"
        "    (Path(sys.argv[3]) / tag).touch()\n"  # hold the leases until both have theirs
        "    while len(list(Path(sys.argv[3]).iterdir())) < 2:\n"
        "        await asyncio.sleep(0.01)\n"
        "asyncio.run(main(sys.argv[2]))\n"
    )
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(repo_dir), tag, str(ready)], stderr=subprocess.PIPE
        )
        for tag in ("p", "q")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    listed = git(repo_dir, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 9, "eight slots, each leased once, plus the checkout"


async def test_gc_archives_unmerged_work_before_removing_anything(tmp_path: Path) -> None:
    repo_dir = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    repo = await open_repo(repo_dir)
    head = git(repo_dir, "rev-parse", "HEAD").strip()
    pool = SlotPool(repo, run_id="old", max_slots=2)
    git(repo_dir, "update-ref", "refs/orchestrator/old/bases/t", head)
    lease = await pool.lease("t", head, branch="orchestrator/work/old/t")
    (lease.slot / "work.txt").write_text("unmerged work\n")
    await pool.release(lease.slot)

    dry = await collect(repo, dry_run=True)
    assert dry.removed
    assert lease.slot.exists(), "a dry run removes nothing"
    done = await collect(repo, dry_run=False)
    assert not lease.slot.exists()
    assert any("archive/old/t" in line for line in done.archived)
    kept = git(repo_dir, "show", "refs/orchestrator/archive/old/t:work.txt")
    assert kept == "unmerged work\n", "the uncommitted work was sealed and archived"
    assert "orchestrator/work/old/t" not in git(repo_dir, "branch", "--list")
