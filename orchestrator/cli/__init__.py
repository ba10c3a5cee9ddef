"""The command line: parse, build settings, one ``asyncio.run``, map errors to exit codes.

This module holds the app and the commands that check and start runs (`validate`, `init`,
`schema`, `run`); `orchestrator.cli.monitor` the ones that read a run from elsewhere.
Heavy modules (the scheduler, agents, anthropic) are imported inside the commands that need
them, so ``--help``, ``validate`` and ``status`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from orchestrator.errors import EnvironmentProblem, OrchestratorError, PlanErrors, UsageError

if TYPE_CHECKING:
    from orchestrator.plan.model import Plan

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run a fleet of coding agents from a plan: concurrent, bounded, killable.",
)


def _responses_dir(value: str | Path) -> Path:
    """``--responses`` as given; an empty value would silently mean the current directory."""
    if isinstance(value, Path):  # the default
        return value
    if not value.strip():
        raise typer.BadParameter("must name a directory, not be empty")
    return Path(value)


ResponsesOpt = Annotated[
    Path, typer.Option("--responses", parser=_responses_dir, help="Where progress files live.")
]
DEFAULT_RESPONSES = Path("agent-responses")


def fail(error: OrchestratorError) -> NoReturn:
    """Print the error as one line and exit with its code."""
    text = str(error)
    if not text.startswith(("error", "/")) and ": error:" not in text:
        text = f"error: {text}"
    sys.stderr.write(text.rstrip("\n") + "\n")
    raise typer.Exit(error.exit_code)


@app.command()
def validate(plans: Annotated[list[Path], typer.Argument(help="Plan files to check.")]) -> None:
    """Check plans; print a summary of each, or every error found (exit 2)."""
    from orchestrator.plan.graph import describe
    from orchestrator.plan.load import load_plan

    failed = False
    for path in plans:
        try:
            plan = load_plan(path)
        except PlanErrors as exc:
            failed = True
            sys.stderr.write(str(exc) + "\n")
            continue
        except OrchestratorError as exc:
            failed = True
            sys.stderr.write(f"{path}: {exc}\n")
            continue
        s = describe(plan)
        kinds = ", ".join(f"{n} {k}" for k, n in s.kinds)
        typer.echo(
            f"{path}: ok - {s.tasks} tasks in {s.waves} waves; critical path {s.critical_path} "
            f"tasks; widest wave {s.widest_wave}; agents: {kinds}; at most {s.most_agents} agents "
            f"(max_agents={plan.limits.max_agents})"
        )
        typer.echo(f"{path}: sandbox {_sandbox_line(plan)}")
    if failed:
        raise typer.Exit(2)


def _sandbox_line(plan: Plan) -> str:
    """What `run` would do about confinement on this machine (probed, nothing started)."""
    from orchestrator.sandbox.decision import check

    try:
        decision = check(plan, responses=DEFAULT_RESPONSES)
    except EnvironmentProblem as exc:
        return f"{plan.sandbox_mode}: run would refuse: {str(exc).removeprefix('error: ')}"
    notes = "".join(f"; warning: {w}" for w in decision.warnings)
    return decision.summary + notes


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="[DIR]", help="Where to write it.")] = Path(),
    force: Annotated[bool, typer.Option(help="Replace files that exist.")] = False,
) -> None:
    """Write a commented starter plan (plan.yaml) and its JSON Schema into DIR.

    The plan runs offline as it is: `orchestrator run plan.yaml`. Exit codes: 0 written,
    2 a file exists (use --force) or DIR is not a directory.
    """
    from importlib import resources

    from orchestrator.plan.schema import plan_schema

    if not directory.is_dir():
        fail(UsageError(f"error: {directory} is not a directory (hint: mkdir -p {directory})"))
    plan, schema = directory / "plan.yaml", directory / "plan.schema.json"
    for path in (plan, schema):
        if path.exists() and not force:
            fail(UsageError(f"error: {path} exists (hint: --force replaces it)"))
    starter = resources.files("orchestrator.plan").joinpath("starter.yaml").read_text("utf-8")
    plan.write_text(starter, encoding="utf-8")
    schema.write_text(json.dumps(plan_schema(), indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {plan} and {schema}; next: orchestrator run {plan}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of plan files (for editors: completion and checks)."""
    from orchestrator.plan.schema import plan_schema

    typer.echo(json.dumps(plan_schema(), indent=2))


@app.command()
def run(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan file.")],
    workspace: Annotated[Path | None, typer.Option(help="Override the plan's workspace.")] = None,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Override limits.max_concurrency.")
    ] = None,
    mode: Annotated[str, typer.Option(help="async (default) or batch.")] = "async",
    resume: Annotated[bool, typer.Option(help="Continue the last run in --responses.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Validate and show the waves; start nothing.")
    ] = False,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="Plain lines instead of the live table.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON.")
    ] = False,
    web: Annotated[
        bool, typer.Option("--web", help="Also serve the live web view (URL on stderr).")
    ] = False,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The web view's port (0: any free one).")
    ] = 0,
) -> None:
    """Run a plan."""
    import asyncio
    from dataclasses import replace

    from orchestrator.plan.graph import graph_of, waves
    from orchestrator.plan.load import load_plan
    from orchestrator.runner import RunOptions, check_environment, run_plan

    if mode not in ("async", "batch"):
        fail(UsageError(f"error: --mode must be async or batch, not {mode!r}"))
    try:
        plan = load_plan(plan_path, workspace_override=workspace)
        if max_concurrency is not None:
            plan = replace(plan, limits=replace(plan.limits, max_concurrency=max_concurrency))
        if dry_run:
            for n, wave in enumerate(waves(graph_of(plan.tasks)), 1):
                typer.echo(f"wave {n}: {', '.join(wave)}")
            typer.echo(f"dry run: {len(plan.tasks)} tasks, nothing started")
            return
        check_environment(plan, os.environ, responses=responses)
        from orchestrator.sandbox.decision import check

        confinement = check(plan, responses=responses)
        opts = RunOptions(
            sandbox=confinement,
            responses=responses,
            mode="batch" if mode == "batch" else "async",
            resume=resume,
            live=not no_live,
            json=json_out,
            web=port if web else None,
            workspace_override=workspace.resolve() if workspace is not None else None,
        )
        code = asyncio.run(run_plan(plan, opts))
    except OrchestratorError as exc:
        fail(exc)
    raise typer.Exit(code)


import orchestrator.cli.monitor  # noqa: E402, F401 - registers the commands that read a run


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:  # a command that forgot to map its error
        sys.stderr.write(f"{exc}\n")
        sys.exit(exc.exit_code)
