"""Choosing and opening the run's workspaces (`Checkouts` or `InPlace`), and delivering.

The default (``isolation: auto``) gives every writing agent its own checkout whenever git
is installed: of the repository the workspace is in, or of a shadow repository for a plain
folder. ``isolation: none`` (or no git) keeps the shared directory, with a warning when
writers overlap. Delivery defaults to ``branch`` in a repository and ``apply`` for a plain
folder (whose owner has no git to take a branch with).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import RunError
from orchestrator.isolation.checkouts import Checkouts, Workspaces
from orchestrator.isolation.delivery import deliver
from orchestrator.isolation.inplace import InPlace
from orchestrator.isolation.repo import check_folder_size, open_repo
from orchestrator.plan.model import Plan
from orchestrator.records.journal import Journal
from orchestrator.records.resume import ResumePlan


def _warn(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def refuse_oversized(plan: Plan) -> None:
    """Before the run has any side effect: refuse (exit 3) a plain folder too big to give
    every agent a checkout of (`check_folder_size`)."""
    if plan.isolation != "none" and shutil.which("git") is not None:
        await check_folder_size(plan.workspace)


async def open_workspaces(
    plan: Plan, responses: Path, run_id: str, journal: Journal,
    resumed: ResumePlan | None, *, warn: Callable[[str], None] = _warn,
) -> Workspaces:  # fmt: skip
    """The run's workspaces, its base fixed (a new run) or found again (``resumed``: the
    tasks changed in the plan since run again even though their work landed). The journal
    is closed when this fails (the error propagates)."""
    rerun = resumed.changed if resumed is not None else None
    try:
        return await _open(plan, run_id, responses, journal.record, rerun, warn)
    except BaseException:
        journal.close()
        raise


async def _open(
    plan: Plan, run_id: str, responses: Path,
    record: Callable[..., None], rerun: tuple[str, ...] | None, warn: Callable[[str], None],
) -> Workspaces:  # fmt: skip
    if plan.isolation == "none":
        record("run", isolation="none")
        return InPlace(plan.workspace, warn=warn)
    if shutil.which("git") is None:
        warn("warning: git is not installed: every agent works in the workspace itself")
        record("run", isolation="none")
        return InPlace(plan.workspace, warn=warn)
    repo = await open_repo(plan.workspace)
    exclude = []
    where = await asyncio.to_thread(responses.resolve)
    if where.is_relative_to(repo.top):
        exclude.append(str(where.relative_to(repo.top)))
    checkouts = Checkouts(
        repo, run_id, max_slots=plan.limits.max_concurrency + 1, record=record, exclude=exclude
    )
    await checkouts.start(resume=rerun is not None)
    for task_id in rerun or ():
        await checkouts.run_again(task_id)
    return checkouts


async def deliver_run(
    places: Workspaces, plan: Plan, *, how: str | None, record: Callable[..., None]
) -> list[str]:
    """Hand the integrated work over; the lines that say how (written on stderr, and for the
    report)."""
    if not isinstance(places, Checkouts):
        return []
    repo = places.repo
    how = how or plan.deliver or ("apply" if repo.shadow else "branch")
    try:
        done = await deliver(
            repo, places.run_id, how=how, base=places.base, clean_base=places.clean_base,
            exclude=places.exclude,
        )  # fmt: skip
    except RunError as exc:
        line = f"delivery: failed: {str(exc).removeprefix('error: ')}"
        record("run", delivery=how, delivery_lines=[line])
        _warn(line)
        places.delivered = [line]
        return [line]
    record("run", delivery=how, delivered_branch=done.branch, integration=done.tip,
           applied=done.applied, delivery_lines=list(done.lines))  # fmt: skip
    for line in done.lines:
        _warn(line)
    places.delivered = list(done.lines)
    return list(done.lines)
