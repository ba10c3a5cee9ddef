"""Remote attempts in isolation's checkouts: the base a node gets is the checkout isolation
leased for the attempt, and the change that comes back is written into that checkout, so
isolation seals and lands it exactly as it does a local attempt's work.

The base is the checkout's files as they are when the attempt starts (``tree_now``: its
HEAD for a fresh lease, its WIP for a carried task, its conflict markers for a conflict
fixer), as one parentless commit with fixed dates: the same files make the same commit, so
a node fetches a base once however many attempts start from it, and a bundle carries that
tree only, never the repository's history. The commit lives in isolation's repository (the
user's, or its shadow); the ref a bundle needs exists only while the bundle is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from orchestrator.cluster.wire import Change
from orchestrator.cluster.workspace import WorkspaceError
from orchestrator.isolation.gitx import GitFailed
from orchestrator.isolation.repo import Repo
from orchestrator.isolation.seal import tree_now

_FIXED = {
    "GIT_AUTHOR_NAME": "orchestrator", "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "orchestrator", "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
    "GIT_AUTHOR_DATE": "@0 +0000", "GIT_COMMITTER_DATE": "@0 +0000",
}  # fmt: skip
"""Who and when of a base commit: fixed, so its id is a function of its files."""


class LeasedBases:
    """Bases and changes of remote attempts through isolation's repository ``repo``."""

    def __init__(self, repo: Repo, run_id: str) -> None:
        self.repo = repo
        self.run_id = run_id
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def base(self, workspace: Path) -> tuple[str, str]:
        """The commit of the checkout ``workspace`` is in, and ``workspace`` inside it."""
        git = self.repo.git
        try:
            top = Path(await git.out("rev-parse", "--show-toplevel", at=workspace))
            prefix = await git.out("rev-parse", "--show-prefix", at=workspace)
            tree, _ = await tree_now(git, top)
            sha = await git.out(
                "commit-tree", tree, stdin=b"orchestrator: remote base\n", env=_FIXED
            )
        except GitFailed as exc:
            raise WorkspaceError(str(exc).removeprefix("error: ")) from exc
        return sha, prefix.strip("/")

    async def bundle(self, sha: str) -> bytes:
        """``sha`` (a base from `base`) as a git bundle."""
        ref = f"refs/orchestrator/{self.run_id}/remote/{sha}"
        git = self.repo.git
        async with self._lock:
            try:
                await git.run("update-ref", ref, sha)
                try:
                    return (await git.run("bundle", "create", "-q", "-", ref)).stdout
                finally:
                    await git.run("update-ref", "-d", ref)
            except GitFailed as exc:
                raise WorkspaceError(str(exc).removeprefix("error: ")) from exc

    async def integrate(self, change: Change, workspace: Path) -> None:
        """Write ``change`` into the checkout ``workspace`` is in (its files only: sealing
        and landing stay isolation's); `WorkspaceError` when it does not apply."""
        if change.empty:
            return
        git = self.repo.git
        fd, name = tempfile.mkstemp(prefix="incoming-", suffix=".bundle", dir=self.repo.state)
        try:
            with os.fdopen(fd, "wb") as out:
                await asyncio.to_thread(out.write, change.bundle)
            top = Path(await git.out("rev-parse", "--show-toplevel", at=workspace))
            await git.run("bundle", "unbundle", name)
            diff = (await git.run("diff", "--binary", change.base, change.head)).stdout
            if diff:
                await git.run("apply", "--whitespace=nowarn", "-", at=top, stdin=diff)
        except GitFailed as exc:
            raise WorkspaceError(str(exc).removeprefix("error: ")) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def close(self) -> None:
        return None
