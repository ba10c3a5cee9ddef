"""A node hands a finished attempt's checkout to the next attempt only when the attempt
left it exactly as it was made (real git, real files, real processes; no Ray needed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from orchestrator.cluster.host import NodeHost
from orchestrator.cluster.wire import AttemptSpec
from orchestrator.cluster.workspace import (
    NodeRepo,
    Snapshots,
    WorkspaceError,
    examine,
    git,
    git_env,
)
from orchestrator.plan.model import Plan, Task
from orchestrator.process.procfs import AGENT_ID_VAR, RUN_ID_VAR

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / "run.sh").write_text("#!/bin/sh\n")
    (ws / "run.sh").chmod(0o755)
    (ws / ".gitignore").write_text("*.log\ncache/\n")
    return ws


class Node:
    """A node's repository with the driver's snapshots of ``workspace``."""

    def __init__(self, snaps: Snapshots, root: Path, spares: int = 4) -> None:
        self.snaps = snaps
        self.repo = NodeRepo(root, spares=spares)

    async def base(self) -> str:
        return (await self.snaps.base(self.snaps.workspace))[0]

    async def take(self, base: str) -> Path:
        async def fetch() -> bytes:
            return await self.snaps.bundle(base)

        return await self.repo.take(base, fetch)

    async def finish(self, checkout: Path, base: str) -> bool:
        """Collect the attempt and give its checkout back; whether git saw it clean."""
        change, clean = await examine(checkout, base, "a")
        assert change.empty
        await self.repo.give_back(checkout, base, clean=clean)
        return clean


@pytest.fixture
async def node(workspace: Path, tmp_path: Path) -> AsyncIterator[Node]:
    snaps = Snapshots(workspace)
    await snaps.open()
    root = tmp_path / "node"
    root.mkdir()
    try:
        yield Node(snaps, root)
    finally:
        snaps.close()


async def test_an_untouched_checkout_goes_to_the_next_attempt_at_its_base(
    node: Node, workspace: Path
) -> None:
    base = await node.base()
    first = await node.take(base)
    (first.parent / "responses").mkdir()
    (first.parent / "responses" / "a.md").write_text("the attempt's own file\n")
    (first / "src" / "app.py").read_text()  # read, run: nothing written
    assert await node.finish(first, base)
    again = await node.take(base)
    assert again == first
    assert node.repo.reused == 1
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # the rest is gone
    await node.finish(again, base)

    (workspace / "src" / "app.py").write_text("print('bye')\n")  # the driver's state moves on
    (workspace / "new.txt").write_text("new\n")
    (workspace / "run.sh").unlink()
    node.snaps._current = None  # (a change applied does this)
    later = await node.base()
    assert later != base
    moved = await node.take(later)
    assert moved == first
    assert node.repo.reused == 2
    assert (moved / "src" / "app.py").read_text() == "print('bye')\n"
    assert (moved / "new.txt").read_text() == "new\n"
    assert not (moved / "run.sh").exists()
    head = await git("rev-parse", "HEAD", cwd=moved, env=git_env(moved.parent))
    assert head.decode().strip() == later
    assert await node.finish(moved, later)


def _chmod(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda c: (c / rel).chmod(mode)


def _run(*args: str) -> Callable[[Path], None]:
    def do(c: Path) -> None:
        subprocess.run(args, cwd=c, check=True, capture_output=True, timeout=30)  # noqa: TID251

    return do


def _trusted(flag: str) -> Callable[[Path], None]:
    """The index told to stop looking at a file, which then changes: git says nothing."""

    def do(c: Path) -> None:
        _run("git", "update-index", flag, "src/app.py")(c)
        (c / "src" / "app.py").write_text("print('changed, and git is told not to look')\n")

    return do


def _same_record(c: Path) -> None:
    """The ``.git`` file names its record another way (git finds the same one)."""
    (c / ".git").write_text((c / ".git").read_text().strip() + f"/../{c.name}\n")


TOUCHES: dict[str, Callable[[Path], None]] = {
    "an empty directory": lambda c: (c / "src" / "empty").mkdir(),
    "a read-only file": _chmod("src/app.py", 0o444),
    "a directory of another mode": _chmod("src", 0o775),
    "the checkout's own mode": _chmod(".", 0o700),
    "a second name for a file": lambda c: os.link(c / "src" / "app.py", c.parent / "alias"),
    "a pipe": lambda c: os.mkfifo(c / "src" / "pipe"),
    "a .git file written otherwise": _same_record,
    "a branch at the base": _run("git", "checkout", "-q", "-b", "mine"),
    "per-worktree refs": _run("git", "bisect", "start"),
    "an entry assumed unchanged": _trusted("--assume-unchanged"),
    "an entry skipped in the worktree": _trusted("--skip-worktree"),
}


@pytest.mark.parametrize("touch", TOUCHES.values(), ids=TOUCHES.keys())
async def test_a_checkout_left_otherwise_than_made_is_removed_not_kept(
    node: Node, touch: Callable[[Path], None]
) -> None:
    base = await node.base()
    first = await node.take(base)
    await asyncio.to_thread(touch, first)
    assert await node.finish(first, base), "git sees nothing of it: the test shows the hole"
    again = await node.take(base)
    assert again != first
    assert node.repo.reused == 0
    assert not first.parent.exists()
    assert not (node.repo.dir / "worktrees" / first.name).exists()
    assert (again / "src" / "app.py").read_text() == "print('hi')\n"


def _ignored(rel: str) -> Callable[[Path], None]:
    def make(c: Path) -> None:
        (c / rel).parent.mkdir(parents=True, exist_ok=True)
        (c / rel).write_text("made by a build\n")

    return make


IGNORED = {"a file": _ignored("src/build.log"), "a directory": _ignored("cache/deep/blob")}


@pytest.mark.parametrize("make", IGNORED.values(), ids=IGNORED.keys())
async def test_what_git_ignores_is_no_change_but_the_checkout_is_not_kept(
    node: Node, make: Callable[[Path], None]
) -> None:
    base = await node.base()
    first = await node.take(base)
    make(first)
    assert not await node.finish(first, base)  # an empty change, and not clean
    assert await node.take(base) != first


async def test_a_node_keeps_at_most_its_spares_and_a_broken_one_is_replaced(
    node: Node, workspace: Path, tmp_path: Path
) -> None:
    root = tmp_path / "small"
    root.mkdir()
    node = Node(node.snaps, root, spares=1)
    base = await node.base()
    one, two, three = [await node.take(base) for _ in range(3)]
    assert all(await asyncio.gather(*(node.finish(c, base) for c in (one, two, three))))
    kept = [c for c in (one, two, three) if c.parent.exists()]
    assert len(kept) == 1  # the others removed: no room, however they came back
    one = kept[0]
    assert len(list((node.repo.dir / "worktrees").iterdir())) == 1
    (one / ".git").unlink()  # broken after it was kept: git cannot move it
    (workspace / "new.txt").write_text("new\n")
    node.snaps._current = None
    later = await node.base()
    fresh = await node.take(later)
    assert fresh != one
    assert not one.parent.exists()
    assert (fresh / "new.txt").read_text() == "new\n"
    assert [p.name for p in (node.repo.dir / "worktrees").iterdir()] == [fresh.name]


async def test_a_host_keeps_a_checkout_only_when_no_process_of_its_attempt_is_left(
    workspace: Path, tmp_path: Path
) -> None:
    run_id = "run-spares"
    escaped = tmp_path / "escaped.pid"
    script = (  # it returns once its descendant has left its group
        f"setsid sh -c 'echo $$ > {escaped}; exec sleep 60' & "
        f"while [ ! -s {escaped} ]; do sleep 0.01; done"
    )
    tasks = {
        "quiet": Task("quiet", agent="command", command=("true",)),
        "daemon": Task(
            "daemon",
            agent="command",
            command=("sh", "-c", script),
        ),
    }
    plan = Plan("p", tuple(tasks.values()), workspace=workspace)
    snaps = Snapshots(workspace)
    await snaps.open()
    base, _ = await snaps.base(workspace)
    host = NodeHost(run_id, "node-a")
    await host.ready(plan, "off")

    async def attempt(agent_id: str) -> Path:
        bundle = asyncio.get_running_loop().create_future()  # as a Ray object reference
        bundle.set_result(await snaps.bundle(base))
        spec = AttemptSpec(
            agent_id=agent_id, run_id=run_id, kind="command", task=tasks[agent_id], attempt=1,
            prompt="", script=(), env={RUN_ID_VAR: run_id, AGENT_ID_VAR: agent_id}, grace=0.2,
            depth=0, parent=None, notes=(), model=None, base=base,
        )  # fmt: skip
        await host.start(spec, [bundle])
        checkout = host._attempts[agent_id].checkout
        assert checkout is not None
        while agent_id not in (batches := await host.poll(0)) or not batches[agent_id].done:
            pass
        change = batches[agent_id].change
        assert change is not None
        assert change.empty
        return checkout

    try:
        first = await attempt("quiet")
        assert await attempt("quiet") == first  # kept, then handed out again
        assert await attempt("daemon") == first
        assert escaped.exists()  # its process outlived the attempt, in the checkout
        assert not first.parent.exists()  # so the checkout went
        assert host._repo.reused == 2
    finally:
        await host.shutdown()
        snaps.close()


async def test_a_base_that_cannot_be_fetched_leaves_the_kept_checkout_kept(node: Node) -> None:
    base = await node.base()
    first = await node.take(base)
    assert await node.finish(first, base)

    async def unreachable() -> bytes:
        raise WorkspaceError("the driver's object store is gone")

    with pytest.raises(WorkspaceError):
        await node.repo.take("0" * 40, unreachable)
    assert await node.take(base) == first  # still there, still handed out
