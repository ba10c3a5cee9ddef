"""`orchestrator runs`: the runs a responses directory has seen, and pruning the old ones.

Every reading command takes ``--run ID`` to open one of them (`orchestrator.cli.run_dir`)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from orchestrator.cli import DEFAULT_RESPONSES, ResponsesOpt, app, fail
from orchestrator.errors import OrchestratorError

runs_app = typer.Typer(
    no_args_is_help=False,
    help="The runs of --responses: the current one and those kept under .runs/.",
)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """List the runs kept in --responses, oldest first: id, plan, start, duration, outcome,
    cost. Open one with --run ID on status, peek, tail, report, watch, serve, wait.

    Exit codes: 0 (also when there is none).
    """
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator.records.history import list_runs

    try:
        entries = [e.as_json() for e in list_runs(responses)]
    except OrchestratorError as exc:
        fail(exc)
    if json_out:
        typer.echo(json.dumps({"runs": entries}))
        return
    if not entries:
        typer.echo(f"no runs recorded in {responses}")
        return
    for entry in entries:
        typer.echo(_line(entry))


@runs_app.command()
def prune(
    keep: Annotated[int, typer.Option(min=0, help="How many earlier runs to keep.")],
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Delete the earlier runs kept under .runs/ but the newest KEEP (never the current run).

    Exit codes: 0, 2 --keep missing or negative.
    """
    from orchestrator.records.history import prune as prune_runs

    try:
        deleted = prune_runs(responses, keep=keep)
    except OrchestratorError as exc:
        fail(exc)
    if json_out:
        typer.echo(json.dumps({"deleted": deleted}))
        return
    typer.echo("deleted: " + (", ".join(deleted) if deleted else "nothing"))


def _line(entry: dict[str, Any]) -> str:
    started = entry["started"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "-"
    took = f"{entry['duration']:.1f}s" if entry["duration"] is not None else "-"
    outcome = str(entry["state"] or "?")
    if entry["exit_code"] is not None:
        outcome += f" (exit {entry['exit_code']})"
    cost = f"${entry['cost_usd'] or 0.0:.4f}"
    mark = " (current)" if entry["current"] else ""
    return f"{entry['id']}{mark}  {entry['plan']}  {when}  {took}  {outcome}  {cost}"
