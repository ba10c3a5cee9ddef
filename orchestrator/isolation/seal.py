"""Sealing a checkout: whatever an agent left becomes one commit on its branch.

The orchestrator commits for agents that do not (hooks off, through ``commit-tree``, so no
hook or config of the agent's runs). An agent that committed keeps its commits; one that
switched branch, detached HEAD or rewrote history below its base is re-rooted: its changes
(against the commit its HEAD ended on) are merged onto the base in memory. What a seal
returns is the tip to land and the files it changed, with line counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RunError
from orchestrator.isolation.gitx import Git


class SealFailed(RunError):
    """The checkout's work could not be put on its base (a rewrite that conflicts with it)."""


@dataclass(frozen=True)
class Change:
    path: str
    added: int | None
    """None for a binary file."""
    removed: int | None

    def line(self) -> str:
        if self.added is None or self.removed is None:
            return f"{self.path} (binary)"
        return f"{self.path} +{self.added} -{self.removed}"


@dataclass(frozen=True)
class Sealed:
    tip: str
    base: str
    changes: tuple[Change, ...]


async def tree_now(git: Git, checkout: Path) -> tuple[str, str | None]:
    """(tree of the checkout's files now, its HEAD): ``add -A`` in its own index."""
    tree, head, _ = await _state(git, checkout)
    return tree, head


async def _state(git: Git, checkout: Path) -> tuple[str, str | None, str | None]:
    """(tree of the files now, HEAD, HEAD's tree)."""
    await git.run("add", "-A", at=checkout)
    tree = await git.out("write-tree", at=checkout)
    found = await git.run("rev-parse", "HEAD", "HEAD^{tree}", at=checkout, check=False)
    lines = found.out.split()
    if found.returncode != 0 or len(lines) != 2:
        return tree, None, None
    return tree, lines[0], lines[1]


async def seal(git: Git, checkout: Path, *, branch: str, base: str, message: str) -> Sealed:
    """Commit what is in ``checkout`` onto ``branch`` (created from ``base``); the tip."""
    tree, head, head_tree = await _state(git, checkout)
    if head is None:
        raise SealFailed(f"error: the checkout {checkout} has no commit at all")
    on_base = (
        head == base
        or (await git.run("merge-base", "--is-ancestor", base, head, check=False)).returncode == 0
    )
    if on_base:
        tip = head if head_tree == tree else await git.commit_tree(tree, [head], message)
    else:  # re-root: the agent's changes against where its HEAD ended, onto the base
        work = await git.commit_tree(tree, [head], message)
        merged = await git.run("merge-tree", "--write-tree", "--name-only", base, work, check=False)
        lines = merged.out.splitlines()
        if merged.returncode != 0 or not lines:
            raise SealFailed(
                f"error: the agent moved its checkout off its base ({head[:12]} is not on "
                f"{base[:12]}) and its changes do not apply to the base: "
                + (", ".join(lines[1:6]) or merged.err)
            )
        tip = await git.commit_tree(lines[0], [base], message + "\n\n(re-rooted on its base)")
    await git.run("update-ref", f"refs/heads/{branch}", tip)
    return Sealed(tip, base, await changes(git, base, tip))


async def seal_wip(git: Git, checkout: Path, *, note: str) -> str | None:
    """Keep whatever is uncommitted in ``checkout`` as a WIP commit on its current branch."""
    tree, head, head_tree = await _state(git, checkout)
    if head is None:
        return None
    if head_tree == tree:
        return head
    wip = await git.commit_tree(tree, [head], f"orchestrator: WIP ({note})")
    await git.run("update-ref", "HEAD", wip, at=checkout)
    return wip


async def changes(git: Git, old: str, new: str) -> tuple[Change, ...]:
    """Files changed from ``old`` to ``new`` with added and removed line counts."""
    out = (await git.run("diff", "--numstat", "-z", "--no-renames", old, new)).stdout
    found: list[Change] = []
    for item in out.split(b"\0"):
        if not item:
            continue
        added, removed, path = item.decode("utf-8", "replace").split("\t", 2)
        found.append(
            Change(
                path, None if added == "-" else int(added), None if removed == "-" else int(removed)
            )
        )
    return tuple(found)
