"""The command line: parse, build settings, one ``asyncio.run``, map errors to exit codes.

This module holds the app and the commands that check and start runs (`validate`, `init`,
`schema`, `run`); `orchestrator.cli.monitor` the ones that read a run from elsewhere.
Heavy modules (the scheduler, agents, anthropic) are imported inside the commands that need
them, so ``--help``, ``validate`` and ``status`` start fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from orchestrator.errors import EnvironmentProblem, OrchestratorError, PlanErrors, UsageError

if TYPE_CHECKING:
    from orchestrator.plan.model import Plan

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run a fleet of coding agents from a plan: concurrent, bounded, killable.\n\n"
    "Exit codes shared by every command: 0 ok, 2 usage or plan error (nothing started), "
    "3 environment error; each command's help lists its own.",
)


def _version(value: bool) -> None:
    if value:
        from orchestrator import __version__

        typer.echo(f"orchestrator {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run a fleet of coding agents from a plan: concurrent, bounded, killable."""


class Mode(StrEnum):
    ASYNC = "async"
    BATCH = "batch"


def _responses_dir(value: str | Path) -> Path:
    """``--responses`` as given; an empty value would silently mean the current directory."""
    if isinstance(value, Path):  # the default
        return value
    if not value.strip():
        raise typer.BadParameter("must name a directory, not be empty")
    return Path(value)


ResponsesOpt = Annotated[
    Path,
    typer.Option(
        "--responses", parser=_responses_dir, metavar="DIR", help="Where progress files live."
    ),
]
DEFAULT_RESPONSES = Path("agent-responses")
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run", metavar="ID", help="A past run (orchestrator runs lists them); default: the last."
    ),
]


def run_dir(responses: Path, run_id: str | None) -> Path:
    """Where run ``run_id`` of ``responses`` keeps its files (exit 2 when there is none)."""
    if run_id is None:
        return responses
    from orchestrator.records.history import run_responses

    try:
        return run_responses(responses, run_id)
    except OrchestratorError as exc:
        fail(exc)


def fail(error: OrchestratorError) -> NoReturn:
    """Print the error as one line and exit with its code."""
    text = str(error)
    if not text.startswith(("error", "/")) and ": error:" not in text:
        text = f"error: {text}"
    sys.stderr.write(text.rstrip("\n") + "\n")
    raise typer.Exit(error.exit_code)


def summary_of(path: Path, plan: Plan) -> str:
    """`validate`'s summary of a plan: its shape, the agents it may start, a cost estimate."""
    from orchestrator.gateway.estimate import estimate
    from orchestrator.plan.graph import critical_path, describe, graph_of

    s = describe(plan)
    kinds = ", ".join(f"{n} {k}" for k, n in s.kinds)
    chain = " -> ".join(critical_path(graph_of(plan.tasks)))
    return (
        f"{path}: ok - {s.tasks} tasks in {s.waves} waves; critical path {s.critical_path} "
        f"tasks; widest wave {s.widest_wave}; agents: {kinds}; at most {s.most_agents} agents "
        f"(max_agents={plan.limits.max_agents})"
        + (f"; on the Ray cluster at {plan.address}" if plan.executor == "ray" else "")
        + f"\n  critical path: {chain}\n  "
        + estimate(plan).line()
    )


@app.command()
def validate(
    plans: Annotated[list[Path], typer.Argument(help="Plan files to check.")],
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per plan.")] = False,
) -> None:
    """Check plans; print a summary of each, or every error found.

    Exit codes: 0 every plan is valid, 2 a plan has errors (each printed as
    file:line:col: error: what [rule] (hint: ...)).
    """
    from orchestrator.gateway.estimate import estimate
    from orchestrator.plan.graph import critical_path, describe, graph_of
    from orchestrator.plan.load import load_plan

    failed = False
    for path in plans:
        try:
            plan = load_plan(path)
        except PlanErrors as exc:
            failed = True
            sys.stderr.write(str(exc) + "\n")
            if json_out:
                typer.echo(json.dumps({"plan": str(path), "ok": False, "errors": exc.as_json()}))
            continue
        except OrchestratorError as exc:
            failed = True
            sys.stderr.write(f"{path}: {exc}\n")
            if json_out:
                error = {"file": str(path), "line": None, "col": None, "rule": None,
                         "message": str(exc), "hint": None}  # fmt: skip
                typer.echo(json.dumps({"plan": str(path), "ok": False, "errors": [error]}))
            continue
        s = describe(plan)
        if json_out:
            summary = {
                "plan": str(path), "ok": True, "name": plan.name, "tasks": s.tasks,
                "waves": s.waves, "critical_path": s.critical_path, "widest_wave": s.widest_wave,
                "agents": dict(s.kinds), "most_agents": s.most_agents,
                "max_agents": plan.limits.max_agents,
                "critical_path_tasks": critical_path(graph_of(plan.tasks)),
                "estimate": estimate(plan).as_json(),
            }  # fmt: skip
            typer.echo(json.dumps(summary))
            continue
        typer.echo(summary_of(path, plan))
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
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
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
    if json_out:
        typer.echo(json.dumps({"plan": str(plan), "schema": str(schema)}))
        return
    typer.echo(f"wrote {plan} and {schema}; next: orchestrator run {plan}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of plan files (for editors: completion and checks). Exit code: 0."""
    from orchestrator.plan.schema import plan_schema

    typer.echo(json.dumps(plan_schema(), indent=2))


@app.command()
def run(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN", help="The plan file.")],
    workspace: Annotated[Path | None, typer.Option(help="Override the plan's workspace.")] = None,
    create_workspace: Annotated[
        bool,
        typer.Option(
            "--create-workspace", help="Create the workspace if it does not exist (else exit 2)."
        ),
    ] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Override limits.max_concurrency.")
    ] = None,
    mode: Annotated[
        Mode,
        typer.Option(
            case_sensitive=False,
            help="async: each task starts once its own dependencies succeeded; batch: wave "
            "by wave.",
        ),
    ] = Mode.ASYNC,
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
    cluster: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="Run the agents on this Ray cluster (auto: local)."),
    ] = None,
    keep_open: Annotated[
        bool,
        typer.Option("--keep-open", help="Wait for added tasks once done, until cancelled."),
    ] = False,
    isolation: Annotated[
        str | None, typer.Option(help="auto (default), worktree or none: per-agent checkouts.")
    ] = None,
    deliver: Annotated[
        str | None, typer.Option(help="branch or apply: how the integrated work is delivered.")
    ] = None,
) -> None:
    """Run a plan.

    Exit codes: 0 every task succeeded and the build passed; 1 something failed, escalated,
    was skipped or cancelled, or a write failed mid-run (--resume continues it); 2 usage or
    plan error, nothing started; 3 environment error before start; 75 another orchestrator
    owns --responses; 130/143 interrupted.
    """
    import asyncio
    from dataclasses import replace

    from orchestrator.plan.graph import graph_of, waves
    from orchestrator.plan.load import load_plan
    from orchestrator.preflight import check_environment
    from orchestrator.runner import RunOptions, run_plan

    if isolation not in (None, "auto", "worktree", "none"):
        fail(UsageError(f"error: --isolation must be auto, worktree or none, not {isolation!r}"))
    if deliver not in (None, "branch", "apply"):
        fail(UsageError(f"error: --deliver must be branch or apply, not {deliver!r}"))
    try:
        plan = load_plan(plan_path, workspace_override=workspace)
        if create_workspace:
            plan = replace(plan, create_workspace=True)
        if max_concurrency is not None:
            plan = replace(plan, limits=replace(plan.limits, max_concurrency=max_concurrency))
        if isolation is not None or deliver is not None:  # the flags beat the plan's keys
            given = {"isolation": isolation or plan.isolation, "deliver": deliver or plan.deliver}
            plan = replace(plan, **given)  # type: ignore[arg-type]
        if dry_run:
            planned = waves(graph_of(plan.tasks))
            if json_out:
                out = {"plan": plan.name, "file": str(plan_path), "tasks": len(plan.tasks),
                       "waves": planned, "workspace": str(plan.workspace),
                       "started": False}  # fmt: skip
                typer.echo(json.dumps(out))
                return
            for n, wave in enumerate(planned, 1):
                typer.echo(f"wave {n}: {', '.join(wave)}")
            typer.echo(f"dry run: {len(plan.tasks)} tasks, nothing started")
            return
        check_environment(plan, os.environ, responses=responses)
        from orchestrator.sandbox.decision import check

        confinement = check(plan, responses=responses)
        opts = RunOptions(
            sandbox=confinement,
            responses=responses,
            mode="batch" if mode is Mode.BATCH else "async",
            resume=resume,
            live=not no_live,
            json=json_out,
            web=port if web else None,
            keep_open=keep_open,
            workspace_override=workspace.resolve() if workspace is not None else None,
            cluster=cluster,
        )
        code = asyncio.run(run_plan(plan, opts))
    except OrchestratorError as exc:
        fail(exc)
    raise typer.Exit(code)


import orchestrator.cli.checkouts  # noqa: E402 - diff, gc
import orchestrator.cli.grow  # noqa: E402 - registers plan and add
import orchestrator.cli.history  # noqa: E402 - registers `runs`
import orchestrator.cli.monitor  # noqa: E402, F401 - registers the commands that read a run


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:  # a command that forgot to map its error
        sys.stderr.write(f"{exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before a run's own handlers were up: nothing is
        die_by_sigint()  # recorded as running yet, so end as an interrupted program does


def die_by_sigint() -> NoReturn:
    """End by SIGINT itself (the status a shell expects of Ctrl-C), without a traceback."""
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    sys.exit(130)  # not reached unless SIGINT is blocked
