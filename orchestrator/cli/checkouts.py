"""The commands about the run's checkouts: ``diff`` (what an agent changed) and ``gc``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli import DEFAULT_RESPONSES, ResponsesOpt, app, fail
from orchestrator.errors import OrchestratorError, UsageError


def _journal(responses: Path) -> Any:
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir

    rundir = RunDir(responses)
    if not rundir.journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    return load(rundir.journal)


@app.command()
def diff(
    name: Annotated[str, typer.Argument(metavar="AGENT|TASK", help="An agent or a task id.")],
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    stat: Annotated[bool, typer.Option("--stat", help="Files and line counts only.")] = False,
) -> None:
    """What an agent changed against its base (a task: what it landed). Exit 2: unknown."""
    from orchestrator.isolation.gitx import Git, base_env

    journal = _journal(responses)
    run = journal.run
    if run.get("isolation") != "worktree":
        fail(UsageError("error: that run had no checkouts (isolation: none): no diff to show"))
    git = Git(Path(run.get("git_dir") or "."), base_env())
    task = journal.tasks.get(name, {})
    agent = journal.agents.get(name)
    if task.get("landed"):
        old, new, at = f"{task['landed']}^", task["landed"], None
    elif agent is not None and agent.get("base"):
        old, new = agent["base"], agent.get("tip")
        at = None if new else Path(agent["checkout"])
    elif name in journal.tasks:
        attempts = [a for a in journal.agents.values() if a.get("task") == name and a.get("base")]
        if not attempts:
            fail(UsageError(f"error: task {name} has no checkout yet"))
        last = attempts[-1]
        old, new = last["base"], last.get("tip")
        at = None if new else Path(last["checkout"])
    else:
        fail(UsageError(f"error: no agent or task named {name} in {responses}"))
    args = ["diff", "--stat"] if stat else ["diff"]
    try:
        result = asyncio.run(
            git.run(*args, old, *([new] if new else []), at=at) if at is None
            else git.run(*args, old, at=at)
        )  # fmt: skip
    except OrchestratorError as exc:
        fail(exc)
    sys.stdout.write(result.out)


@app.command()
def gc(
    workspace: Annotated[
        Path | None, typer.Option(help="The workspace (default: the last run's, else here).")
    ] = None,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; remove nothing.")] = False,
) -> None:
    """Remove idle checkouts and finished work branches; unmerged work is archived first."""
    from orchestrator.isolation.gc import collect
    from orchestrator.isolation.repo import open_repo

    if workspace is None:
        from orchestrator.records.rundir import RunDir

        if RunDir(responses).journal.exists():
            workspace = Path(_journal(responses).run.get("workspace") or ".")
        else:
            workspace = Path()
    if not workspace.is_dir():
        fail(UsageError(f"error: workspace {workspace} is not a directory"))

    async def go() -> Any:
        return await collect(await open_repo(workspace), dry_run=dry_run)

    try:
        done = asyncio.run(go())
    except OrchestratorError as exc:
        fail(exc)
    verb = "would remove" if dry_run else "removed"
    for line in done.archived:
        typer.echo(f"{'would archive' if dry_run else 'archived'}: {line}")
    for line in done.removed:
        typer.echo(f"{verb}: {line}")
    for line in done.kept:
        typer.echo(f"kept: {line}")
    if not (done.archived or done.removed or done.kept):
        typer.echo("nothing to collect")


def pool_use(path: str | None) -> dict[str, Any] | None:
    """The disk the run's pool of checkouts uses (shared by the runs of its repository)."""
    if not path:
        return None
    from orchestrator.isolation.pool import disk_use

    slots, size = disk_use(Path(path))
    return {"path": path, "checkouts": slots, "bytes": size}
