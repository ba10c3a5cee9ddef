"""A remote attempt in isolation's checkout, with real git and no Ray: the node gets the files
of the checkout isolation leased, and the change it sends back lands through isolation's own
landing (seal, merge-tree, the integration ref) like a local attempt's work."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.leased import LeasedBases
from orchestrator.cluster.workspace import NodeRepo, collect
from orchestrator.isolation.checkouts import Checkouts
from orchestrator.isolation.repo import open_repo


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(  # noqa: TID251 (test set-up, before any loop work)
        args, cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def make_workspace(tmp_path: Path, *, in_repo: bool) -> Path:
    top = tmp_path / "project"
    ws = top / "sub" if in_repo else top
    ws.mkdir(parents=True)
    (ws / "app.py").write_text("print('hi')\n")
    (ws / "data.bin").write_bytes(bytes(range(256)))
    if in_repo:
        (top / "outside.txt").write_text("not the workspace, same repository\n")
        sh("git", "init", "-q", cwd=top)
        sh("git", "add", "-A", cwd=top)
        sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=top)
    return ws


async def open_checkouts(ws: Path) -> Checkouts:
    repo = await open_repo(ws)
    checkouts = Checkouts(repo, "r1", max_slots=3, record=lambda *a, **k: None, exclude=[])
    await checkouts.start(resume=False)
    return checkouts


async def on_a_node(root: Path, bases: LeasedBases, sha: str, prefix: str, name: str) -> Path:
    """Check base ``sha`` out as a node does; the agent's working directory in it."""

    async def fetch() -> bytes:
        return await bases.bundle(sha)

    into = root / name / "checkout"
    await asyncio.to_thread(into.parent.mkdir, parents=True)
    await NodeRepo(root).checkout(sha, fetch, into)
    return into / prefix if prefix else into


@pytest.mark.parametrize("in_repo", [True, False], ids=["repository-subdir", "plain-folder"])
async def test_a_remote_change_lands_through_isolation(tmp_path: Path, in_repo: bool) -> None:
    ws = make_workspace(tmp_path, in_repo=in_repo)
    checkouts = await open_checkouts(ws)
    bases = LeasedBases(checkouts.repo, "r1")
    place = await checkouts.lease("a", "task", "a")
    sha, prefix = await bases.base(place.path)
    assert prefix == ("sub" if in_repo else "")
    other = await checkouts.lease("b", "task", "b")
    assert (await bases.base(other.path))[0] == sha, "the same files: one base for both"

    node = await on_a_node(tmp_path / "node", bases, sha, prefix, "a")
    assert (node / "app.py").read_text() == "print('hi')\n"
    assert (node / "data.bin").read_bytes() == bytes(range(256))
    (node / "app.py").write_text("print('bye')\n")
    (node / "new.txt").write_text("new\n")
    (node / "data.bin").unlink()
    change = await collect(node.parent if prefix else node, sha, "a")
    assert not change.empty

    await bases.integrate(change, place.path)
    assert (place.path / "app.py").read_text() == "print('bye')\n", "into a's checkout"
    assert (ws / "app.py").read_text() == "print('hi')\n", "never into the user's files"
    back = await checkouts.hand_back(
        place, "succeeded", "done", summary="done", kind="command", prompt="a"
    )
    assert back.state == "succeeded"
    assert any(line.startswith("landed: ") for line in back.changes), back.changes
    git = checkouts.repo.git
    tip = checkouts.refs["integration"]
    inside = f"{prefix}/" if prefix else ""
    assert await git.out("show", f"{tip}:{inside}app.py") == "print('bye')"
    assert await git.out("show", f"{tip}:{inside}new.txt") == "new"
    gone = await git.run("cat-file", "-e", f"{tip}:{inside}data.bin", check=False)
    assert gone.returncode != 0
    if in_repo:
        assert await git.out("show", f"{tip}:outside.txt"), "the rest of the repository stays"
    assert await git.rev(f"refs/orchestrator/r1/remote/{sha}") is None, "no ref left behind"
    await checkouts.hand_back(other, "cancelled", "stop", summary="", kind="command", prompt="b")


async def test_an_unchanged_remote_attempt_lands_nothing(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, in_repo=False)
    checkouts = await open_checkouts(ws)
    bases = LeasedBases(checkouts.repo, "r1")
    place = await checkouts.lease("a", "task", "a")
    sha, prefix = await bases.base(place.path)
    node = await on_a_node(tmp_path / "node", bases, sha, prefix, "a")
    change = await collect(node, sha, "a")
    assert change.empty
    await bases.integrate(change, place.path)
    back = await checkouts.hand_back(
        place, "succeeded", "done", summary="done", kind="command", prompt="a"
    )
    assert back.state == "succeeded"
    assert "changed: nothing" in back.changes
