"""Plans that come from a goal and plans that grow: `orchestrator plan` (a model drafts the
plan file) and `orchestrator add` (a task added to a running plan, by an agent from inside its
process or by a person from another terminal)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli import _responses_dir, app, fail
from orchestrator.errors import EnvironmentProblem, OrchestratorError, PlanErrors, UsageError


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
    from orchestrator.control import channel
    from orchestrator.process.env import QUOTA_VAR
    from orchestrator.records.rundir import RunDir

    payload: dict[str, Any] = {"op": "add", "id": task_id, "prompt": prompt}
    if kind is not None:
        payload["kind"] = kind
    payload["depends_on"] = list(after or [])
    inside = os.environ.get(QUOTA_VAR, "")
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


DEFAULT_MODEL = "claude-sonnet-4-6"


@app.command("plan")
def plan_(
    goal: Annotated[str, typer.Argument(metavar="GOAL", help="What the agents are to achieve.")],
    workspace: Annotated[Path, typer.Option(help="Where the agents will work.")] = Path("."),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The plan file (default plans/<goal>.yaml)."),
    ] = None,
    model: Annotated[str, typer.Option(help="The model that drafts it.")] = DEFAULT_MODEL,
    force: Annotated[bool, typer.Option(help="Replace the output file if it exists.")] = False,
) -> None:
    """Draft a plan for GOAL with a model, validate it, and print its summary; nothing runs.

    Exit codes: 0 written and valid; 2 the draft still did not validate after the model had
    two chances to correct it (the errors are printed, the draft is left in the file) or a
    usage error; 3 no API key; 1 the model did not answer.
    """
    import asyncio

    from orchestrator.cli import summary_of
    from orchestrator.drafting.draft import MAX_CORRECTIONS, draft_plan

    if not goal.strip():
        fail(UsageError('error: the goal is empty (hint: orchestrator plan "add a login page")'))
    if not workspace.is_dir():
        fail(UsageError(f"error: workspace {workspace} is not a directory"))
    if output is None:
        slug = "-".join(re.findall(r"[a-z0-9]+", goal.lower()))[:40].strip("-") or "plan"
        output = Path("plans") / f"{slug}.yaml"
        output.parent.mkdir(exist_ok=True)
    if output.suffix not in (".yaml", ".yml"):
        fail(UsageError(f"error: {output}: the model writes YAML (hint: -o NAME.yaml)"))
    if not output.parent.is_dir():
        fail(
            UsageError(
                f"error: {output.parent} is not a directory (hint: mkdir -p {output.parent})"
            )
        )
    if (output.exists() or output.is_symlink()) and not force:
        fail(UsageError(f"error: {output} exists (hint: --force replaces it, or -o NAME.yaml)"))
    try:
        drafted = asyncio.run(draft_plan(
            goal, workspace=workspace.resolve(), output=output, env=dict(os.environ), model=model
        ))  # fmt: skip
    except PlanErrors as exc:
        sys.stderr.write(str(exc) + "\n")
        fail(UsageError(
            f"error: the model's plan still does not validate after {MAX_CORRECTIONS} "
            f"corrections; its last draft is in {output} (hint: fix it by hand and run "
            f"orchestrator validate {output}, or ask again with a more precise goal)"
        ))  # fmt: skip
    except OrchestratorError as exc:
        fail(exc)
    tries = "first try" if not drafted.corrections else f"{drafted.corrections + 1} tries"
    used = f"{drafted.tokens_in} in / {drafted.tokens_out} out tokens"
    typer.echo(
        f"wrote {output} (drafted by {model} in {tries}: {used}, ${drafted.cost_usd:.4f}); "
        "nothing runs yet"
    )
    typer.echo(summary_of(output, drafted.plan))
    typer.echo(f"next: orchestrator run {output}")
