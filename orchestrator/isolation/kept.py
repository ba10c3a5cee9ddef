"""Conflicted checkouts kept for a person, and adopting what that person committed there.

When a task's work conflicts with the integrated work and no fixer resolves it, its checkout
stays as it is (conflict markers in place, locked as kept) and git remembers it: a blob under
``refs/orchestrator/<run>/kept/<task>`` says which checkout, branch and paths. On
``--resume`` that checkout is looked at before any agent starts: markers still there mean the
task stays escalated; none left means the person's resolution (committed, or committable as
it is) is the task's work, landed without running an agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.isolation.gitx import Git
from orchestrator.isolation.seal import tree_now


@dataclass(frozen=True)
class Kept:
    """A task's conflicted checkout, kept for a person."""

    task_id: str
    agent_id: str
    """The attempt whose work conflicted (its branch is the checkout's)."""
    slot: Path
    path: Path
    """Where the workspace is inside ``slot`` (what a person ``cd``s to)."""
    paths: tuple[str, ...]
    """The conflicted paths."""
    title: str
    """The task's landing title (the first line of its prompt)."""
    left: str = ""
    """`fingerprint` of the checkout when the run left it: unchanged since, nobody resolved
    anything (a failed fixer's edits are not a person's resolution)."""

    def by_hand(self) -> str:
        """How a person finishes it (REPORT.md, the blocker, the escalation)."""
        paths = ", ".join(self.paths)
        return (
            f"By hand: cd {self.path}; resolve {paths} (remove every conflict marker); "
            f"git add -A; git commit; then orchestrator run PLAN --resume (the commit lands as "
            f"{self.task_id}'s work; no agent runs it again)"
        )


def _ref(ns: str, task_id: str) -> str:
    return f"{ns}/kept/{task_id}"


async def remember(git: Git, ns: str, kept: Kept) -> None:
    fields = {**asdict(kept), "slot": str(kept.slot), "path": str(kept.path)}
    blob = await git.out("hash-object", "-w", "--stdin", stdin=json.dumps(fields).encode())
    await git.run("update-ref", _ref(ns, kept.task_id), blob)


async def forget(git: Git, ns: str, task_id: str) -> None:
    await git.run("update-ref", "-d", _ref(ns, task_id), check=False)


async def recall(git: Git, ns: str) -> dict[str, Kept]:
    """The kept checkouts of a run whose directory still exists, by task."""
    out = await git.out("for-each-ref", "--format=%(objectname)", f"{ns}/kept/")
    found: dict[str, Kept] = {}
    for sha in out.split():
        raw = json.loads(await git.out("cat-file", "blob", sha))
        kept = Kept(
            raw["task_id"], raw["agent_id"], Path(raw["slot"]), Path(raw["path"]),
            tuple(raw["paths"]), raw["title"], raw.get("left", ""),
        )  # fmt: skip
        if kept.slot.is_dir():
            found[kept.task_id] = kept
    return found


async def markers_left(git: Git, checkout: Path, paths: tuple[str, ...]) -> list[str]:
    """Which of ``paths`` still hold a conflict marker line in ``checkout``'s files."""
    if not paths:
        return []
    found = await git.run(
        "grep", "-l", "--no-color", "-e", "^<<<<<<< ", "-e", "^>>>>>>> ", "--", *paths,
        at=checkout, check=False,
    )  # fmt: skip
    return found.out.split()


async def fingerprint(git: Git, checkout: Path, paths: tuple[str, ...]) -> str:
    """HEAD and the conflicted files' contents (read without touching the index)."""
    head = await git.run("rev-parse", "-q", "--verify", "HEAD", at=checkout, check=False)

    def contents() -> str:
        digest = hashlib.sha256(head.out.strip().encode())
        for path in paths:
            try:
                digest.update(path.encode() + b"\0" + (checkout / path).read_bytes() + b"\0")
            except OSError:
                digest.update(path.encode() + b"\0(missing)\0")
        return digest.hexdigest()

    return await asyncio.to_thread(contents)


async def adopt(git: Git, checkout: Path, *, message: str) -> str:
    """The commit that holds what a person left in ``checkout``: their commit as it is, or
    one made on top of it for what is not committed yet (finishing a merge they left open)."""
    tree, head = await tree_now(git, checkout)
    assert head is not None, "a kept checkout always has a commit"
    merging = await git.run("rev-parse", "-q", "--verify", "MERGE_HEAD", at=checkout, check=False)
    other = merging.out.strip() if merging.returncode == 0 else ""
    head_tree = await git.out("rev-parse", f"{head}^{{tree}}")
    if not other and head_tree == tree:
        return head
    tip = await git.commit_tree(tree, [head, *([other] if other else [])], message)
    await git.run("merge", "--quit", at=checkout, check=False)
    await git.run("update-ref", "HEAD", tip, at=checkout)
    return tip
