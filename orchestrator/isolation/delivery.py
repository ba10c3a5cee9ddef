"""Delivery: the integrated result as a branch, or applied to the user's checkout when safe.

``branch`` sets ``orchestrator/<run>`` to the integration tip and says how to take it.
``apply`` writes the run's changes into the user's files only when none of the files it
changes were changed by the user since the run began (then the diff applies cleanly, the
user's own uncommitted edits stay as they are, nothing is staged); a clean checkout still at
the run's base is fast-forwarded instead. Otherwise nothing is touched and the branch is the
delivery. The user's index is never written except by that fast-forward.

What was applied is remembered (``refs/orchestrator/<run>/delivered``): a resumed run that
lands more applies only what is new since then, on top of what it applied before.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.isolation.gitx import GitFailed
from orchestrator.isolation.landing import refs
from orchestrator.isolation.repo import Repo, working_tree


@dataclass(frozen=True)
class Delivery:
    branch: str
    tip: str
    applied: bool
    lines: tuple[str, ...]


async def deliver(
    repo: Repo, run_id: str, *, how: str, base: str, clean_base: bool, exclude: list[str]
) -> Delivery:
    git = repo.git
    tip = await git.rev(refs(run_id)["integration"])
    branch = f"orchestrator/{run_id}"
    if tip is None:  # deleted under the run, or git failing: nothing can be delivered
        ref = refs(run_id)["integration"]
        line = f"delivery: none: git cannot read the run's integration ref {ref}"
        return Delivery(branch, base, False, (line,))
    # tasks that changed nothing still land a commit each: the trees tell what changed
    tree, base_tree = (await git.out("rev-parse", f"{tip}^{{tree}}", f"{base}^{{tree}}")).split()
    if tree == base_tree:
        return Delivery(branch, tip, False, ("delivery: nothing changed",))
    delivered = f"{refs(run_id)['ns']}/delivered"
    applied_before = await git.rev(delivered)
    if applied_before and tree == await git.out("rev-parse", f"{applied_before}^{{tree}}"):
        line = f"delivery: nothing new since it was applied to {repo.top}"
        return Delivery(branch, tip, True, (line,))
    base = applied_before or base  # the user's files hold what was applied before
    await git.run("update-ref", f"refs/heads/{branch}", tip)
    where = "" if repo.shadow else f" in {repo.top}"
    if repo.shadow:
        take = (
            f"git --git-dir={git.git_dir} --work-tree={repo.top} diff {base} {branch} "
            f"| git -C {repo.top} apply"
        )
    elif clean_base:
        take = f"git merge --ff-only {branch}"
    else:
        take = f"git diff {base} {branch} | git apply  (your uncommitted changes were its base)"
    hint = (f"delivery: branch {branch}{where}; take it with: {take}",)
    if how != "apply":
        return Delivery(branch, tip, False, hint)
    applied, why = await _apply(repo, base, tip, branch, clean_base, exclude)
    if applied:
        await git.run("update-ref", delivered, tip)
        return Delivery(branch, tip, True, (f"delivery: applied to {repo.top} ({why})",))
    return Delivery(branch, tip, False, (f"delivery: not applied: {why}", *hint))


async def _apply(
    repo: Repo, base: str, tip: str, branch: str, clean_base: bool, exclude: list[str]
) -> tuple[bool, str]:
    git = repo.git
    now = await working_tree(repo, exclude=exclude)
    base_tree = await git.out("rev-parse", f"{base}^{{tree}}")
    theirs = set(await _names(repo, base_tree, now))
    ours = set(await _names(repo, base, tip))
    overlap = sorted(theirs & ours)
    if overlap:
        return False, f"you changed {', '.join(overlap[:5])} since the run began"
    if not repo.shadow and clean_base and not theirs and await git.rev("HEAD") == base:
        try:
            await git.run("merge", "-q", "--ff-only", branch, at=repo.top)
        except GitFailed as exc:
            return False, str(exc)
        return True, "fast-forward"
    patch = (await git.run("diff", "--binary", "--full-index", base, tip)).stdout
    # A shadow's folder may sit inside a repository that ignores it (demo-workspace/): run
    # from there, `git apply` would take paths as relative to that repository's top and skip
    # every one outside the current directory, silently. The shadow's own git dir and work
    # tree make the folder the top.
    at, tree = (None, repo.top) if repo.shadow else (repo.top, None)
    check = await git.run("apply", "--check", stdin=patch, check=False, at=at, work_tree=tree)
    if check.returncode != 0:
        return False, f"the changes do not apply: {check.err[:300]}"
    await git.run("apply", stdin=patch, at=at, work_tree=tree)
    return True, "as uncommitted changes"


async def _names(repo: Repo, old: str, new: str) -> list[str]:
    out = await repo.git.run("diff", "--name-only", "-z", "--no-renames", old, new)
    return [n.decode("utf-8", "replace") for n in out.stdout.split(b"\0") if n]
