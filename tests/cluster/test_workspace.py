"""Workspaces as git bundles, with real git: what a node checks out is the driver's
workspace, and what it changed comes back whole, or not at all (no Ray needed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cluster import workspace as workspace_module
from orchestrator.cluster.workspace import (
    NodeRepo,
    Snapshots,
    WorkspaceError,
    collect,
    git,
    git_env,
    hold,
    sweep_stale,
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    (ws / "keep.bin").write_bytes(bytes(range(256)))
    (ws / "agent-responses").mkdir()
    (ws / "agent-responses" / "a.md").write_text("not part of the workspace\n")
    return ws


async def check_out(root: Path, base: str, bundle: bytes, name: str = "a") -> Path:
    """A node's worktree of ``base`` (the node under ``root``)."""

    async def fetch() -> bytes:
        return bundle

    into = root / name / "workspace"
    await asyncio.to_thread(into.parent.mkdir, parents=True)
    await NodeRepo(root).checkout(base, fetch, into)
    return into


async def open_snapshots(ws: Path) -> Snapshots:
    snaps = Snapshots(ws, exclude=(ws / "agent-responses",))
    await snaps.open()
    return snaps


async def base_of(snaps: Snapshots) -> tuple[str, bytes]:
    """The workspace's base and its bundle (``isolation: none``: one snapshot per state)."""
    base, prefix = await snaps.base(snaps.workspace)
    assert prefix == ""
    return base, await snaps.bundle(base)


async def test_a_node_gets_the_workspace_and_its_change_comes_back(
    workspace: Path, tmp_path: Path
) -> None:
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        node = await check_out(tmp_path / "node", base, bundle)
        assert (node / "src" / "app.py").read_text() == "print('hi')\n"
        assert (node / "keep.bin").read_bytes() == bytes(range(256))
        assert not (node / "agent-responses").exists()  # the run's records stay on the driver
        (node / "src" / "app.py").write_text("print('bye')\n")
        (node / "new.txt").write_text("new\n")
        (node / "keep.bin").unlink()
        change = await collect(node, base, "a")
        assert not change.empty
        await snaps.integrate(change, snaps.workspace)
        assert (workspace / "src" / "app.py").read_text() == "print('bye')\n"
        assert (workspace / "new.txt").read_text() == "new\n"
        assert not (workspace / "keep.bin").exists()
        assert (workspace / "agent-responses" / "a.md").exists()
        assert (await base_of(snaps))[0] != base  # the next attempt starts from the new state
    finally:
        snaps.close()


async def test_an_unchanged_workspace_sends_nothing_back(workspace: Path, tmp_path: Path) -> None:
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        assert await base_of(snaps) == (base, bundle)  # one snapshot per state, reused
        node = await check_out(tmp_path / "node", base, bundle)
        change = await collect(node, base, "a")
        assert change.empty
        await snaps.integrate(change, snaps.workspace)
        assert snaps.applied == 0
    finally:
        snaps.close()


async def test_a_change_that_no_longer_applies_leaves_the_workspace_as_it_was(
    workspace: Path, tmp_path: Path
) -> None:
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        changes = []
        for name in ("one", "two"):
            node = await check_out(tmp_path / name, base, bundle)
            (node / "src" / "app.py").write_text(f"print({name!r})\n")
            (node / f"{name}.txt").write_text(name)
            changes.append(await collect(node, base, name))
        await snaps.integrate(changes[0], workspace)
        with pytest.raises(WorkspaceError):
            await snaps.integrate(changes[1], workspace)
        assert (workspace / "src" / "app.py").read_text() == "print('one')\n"
        assert not (workspace / "two.txt").exists()  # whole or not at all
    finally:
        snaps.close()


def test_the_cli_and_a_local_run_never_import_ray() -> None:
    code = (
        "import sys, orchestrator.cli, orchestrator.runner, orchestrator.cluster.executor, "
        "orchestrator.cluster.nodes;"
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0  # noqa: TID251


async def test_a_node_fetches_each_base_once_and_an_agent_s_own_commit_comes_back(
    workspace: Path, tmp_path: Path
) -> None:
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        fetched: list[str] = []

        async def fetch() -> bytes:
            fetched.append(base)
            return bundle

        repo = NodeRepo(tmp_path)
        one, two = tmp_path / "one", tmp_path / "two"
        await repo.checkout(base, fetch, one)
        await repo.checkout(base, fetch, two)
        assert fetched == [base]
        (two / "committed.txt").write_text("by the agent\n")
        for args in (("add", "."), ("commit", "-qm", "mine")):
            await git(*args, cwd=two, env=git_env(tmp_path))
        assert (await collect(one, base, "one")).empty
        change = await collect(two, base, "two")
        await snaps.integrate(change, snaps.workspace)
        assert (workspace / "committed.txt").read_text() == "by the agent\n"
        await repo.prune()
    finally:
        snaps.close()


async def test_a_removed_checkout_leaves_no_record_in_the_node_s_repository(
    workspace: Path, tmp_path: Path
) -> None:
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)

        async def fetch() -> bytes:
            return bundle

        node = tmp_path / "node"
        node.mkdir()
        repo = NodeRepo(node)
        checkouts = [node / f"attempt-{i}" / f"attempt-{i}" for i in range(3)]
        for into in checkouts:
            await repo.checkout(base, fetch, into)
        records = repo.dir / "worktrees"
        assert len(list(records.iterdir())) == 3
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("not the node's\n")
        # an agent rewrote its .git file: the record is found by name, nothing else is touched
        (checkouts[1] / ".git").write_text(f"gitdir: {outside}\n")
        for into in checkouts[:2]:
            await repo.remove(into)
            assert not into.parent.exists()
        assert [r.name for r in records.iterdir()] == ["attempt-2"]
        assert (outside / "keep").read_text() == "not the node's\n"
        listed = await git("--git-dir", str(repo.dir), "worktree", "list", "--porcelain",
                           cwd=node, env=git_env(node))  # fmt: skip
        assert listed.decode().count("worktree ") == 2  # the repository and the live checkout
        await repo.remove(checkouts[2])
        await repo.remove(checkouts[2])  # idempotent
        assert list(records.iterdir()) == []
        assert sorted(p.name for p in node.iterdir()) == ["repo.git"]  # nothing else left
        again = await check_out(node, base, bundle, name="again")
        assert (again / "src" / "app.py").read_text() == "print('hi')\n"
    finally:
        snaps.close()


async def test_a_record_is_moved_out_only_while_no_checkout_is_being_made(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`worktree add` lists every record and dies on one that vanished meanwhile ("Invalid
    path"), so a record leaves under the lock that makes checkouts one at a time."""
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        repo = NodeRepo(tmp_path)
        held: list[bool] = []
        rename = os.rename

        def watched(src: str | Path, dst: str | Path) -> None:
            held.append(repo._lock.locked())
            rename(src, dst)

        monkeypatch.setattr(workspace_module.os, "rename", watched)
        checkouts = [tmp_path / f"attempt-{i}" / f"attempt-{i}" for i in range(3)]

        async def fetch() -> bytes:
            return bundle

        for into in checkouts:
            await repo.checkout(base, fetch, into)
        await asyncio.gather(*(repo.remove(into) for into in checkouts))
        assert held == [True, True, True]
    finally:
        snaps.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_checkouts_made_while_others_are_removed_never_fail(
    workspace: Path, tmp_path: Path
) -> None:
    """600 attempts, 32 at once, on one node: without the lock 1-2 of them failed."""
    snaps = await open_snapshots(workspace)
    try:
        base, bundle = await base_of(snaps)
        node = tmp_path / "node"
        node.mkdir()
        repo = NodeRepo(node)
        slots = asyncio.Semaphore(32)
        failed: list[str] = []

        async def fetch() -> bytes:
            return bundle

        async def attempt(i: int) -> None:
            into = node / f"attempt-{i}" / f"attempt-{i}"
            async with slots:
                try:
                    await repo.checkout(base, fetch, into)
                    await asyncio.sleep(0.002 * (i % 5))
                    assert (await collect(into, base, f"a{i}")).empty
                except WorkspaceError as exc:
                    failed.append(str(exc))
                finally:
                    await repo.remove(into)

        await asyncio.gather(*(attempt(i) for i in range(600)))
        assert failed == []
        assert list((repo.dir / "worktrees").iterdir()) == []
    finally:
        snaps.close()


def test_what_a_dead_process_left_is_swept_and_a_live_one_s_is_kept(tmp_path: Path) -> None:
    live, dead = tmp_path / "orchestrator-node-live", tmp_path / "orchestrator-node-dead"
    for root in (live, dead):
        root.mkdir()
    held = hold(live)
    script = (
        "import pathlib; from orchestrator.cluster.workspace import hold;"
        f"hold(pathlib.Path({str(dead)!r}))"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)  # noqa: TID251
    (tmp_path / "orchestrator-node-foreign").mkdir()  # no lock: not one of ours
    try:
        assert sweep_stale(tmp_path, "orchestrator-node-") == [dead]
        assert live.exists()
        assert (tmp_path / "orchestrator-node-foreign").exists()
    finally:
        os.close(held)
