"""`orchestrator add`: a task added to a running plan, by an agent from inside its process or
by a person from another terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli import _responses_dir, app, fail
from orchestrator.errors import EnvironmentProblem, OrchestratorError, UsageError


@app.command()
def add(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The new task's id.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the task is to do.")] = "",
    kind: Annotated[
        str | None,
        typer.Option(help="Its agent kind (default: the adding agent's, or the plan's default)."),
    ] = None,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="A task it depends on (repeatable).")
    ] = None,
    responses: Annotated[
        Path | None,
        typer.Option(
            "--responses",
            parser=_responses_dir,
            help="The run's directory (inside an agent: its own run, from its environment).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Add a task to the running plan; checked like a plan and against the run's limits.

    Exit codes: 0 added, 1 refused (the answer says which rule), 2 a bad request, 3 no run
    is there to take it.
    """
    from orchestrator.control import channel, quota
    from orchestrator.records.rundir import RunDir

    payload: dict[str, Any] = {"op": "add", "id": task_id, "prompt": prompt}
    if kind is not None:
        payload["kind"] = kind
    payload["depends_on"] = list(after or [])
    inside = os.environ.get(quota.QUOTA_VAR, "")
    try:
        if responses is None and inside:
            where = inside
            answer = channel.request(Path(inside), payload)
        else:
            rundir = RunDir(responses or Path("agent-responses"))
            where = str(rundir.responses)
            answer = channel.request_live(rundir, payload)
    except OrchestratorError as exc:
        fail(exc)
    if answer is None:
        fail(EnvironmentProblem(f"error: no orchestrator is running at {where} (hint: start "
                                "one with orchestrator run PLAN --keep-open)"))  # fmt: skip
    if "error" in answer:
        fail(UsageError(str(answer["error"])))
    if json_out:
        typer.echo(json.dumps(answer))
    elif answer.get("ok"):
        parent = answer.get("parent")
        typer.echo(f"added {answer.get('added')} (depth {answer.get('depth')}"
                   + (f", parent {parent})" if parent else ")"))  # fmt: skip
    else:
        refused = answer.get("refused") or {}
        hint = f" (hint: {refused['hint']})" if refused.get("hint") else ""
        sys.stdout.write(f"refused: {refused.get('message')} [{refused.get('rule')}]{hint}\n")
    if not answer.get("ok"):
        raise typer.Exit(1)
