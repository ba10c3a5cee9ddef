"""The command line: parse, build settings, one ``asyncio.run``, map errors to exit codes.

Heavy modules (the scheduler, agents, anthropic) are imported inside the commands that need
them, so ``--help``, ``validate`` and ``status`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from orchestrator.errors import OrchestratorError, PlanErrors, UsageError

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


def _fail(error: OrchestratorError) -> NoReturn:
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
    if failed:
        raise typer.Exit(2)


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
) -> None:
    """Run a plan."""
    import asyncio
    from dataclasses import replace

    from orchestrator.plan.graph import graph_of, waves
    from orchestrator.plan.load import load_plan
    from orchestrator.runner import RunOptions, check_environment, run_plan

    if mode not in ("async", "batch"):
        _fail(UsageError(f"error: --mode must be async or batch, not {mode!r}"))
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
        opts = RunOptions(
            responses=responses,
            mode="batch" if mode == "batch" else "async",
            resume=resume,
            live=not no_live,
            json=json_out,
        )
        code = asyncio.run(run_plan(plan, opts))
    except OrchestratorError as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command()
def status(
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Every agent of the current or last run, from the journal."""
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir, is_locked
    from orchestrator.view import snapshot
    from orchestrator.view.snapshot import with_last_lines

    rundir = RunDir(responses)
    if not rundir.journal.exists():
        _fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    journal = load(rundir.journal)
    alive = is_locked(rundir)
    if journal.run.get("state") == "running" and not alive:
        # Its orchestrator was killed: stop what it left behind (cheap when nothing is left).
        from orchestrator.control.leftovers import LEFTOVER_GRACE, stop_leftovers

        stopped = stop_leftovers(rundir, None, grace=LEFTOVER_GRACE)
        if stopped:
            pid = journal.run.get("pid")
            sys.stderr.write(
                f"status: the orchestrator (pid {pid}) is gone; stopped what its agents left "
                f"running: {', '.join(stopped)}\n"
            )
    snap = with_last_lines(snapshot.from_journal(journal, alive=alive), responses)
    if json_out:
        typer.echo(json.dumps(snap.as_status_json()))
        return
    from rich.console import Console

    from orchestrator.view import dashboard

    Console().print(dashboard.render(snap))


@app.command()
def peek(
    agent: str,
    n: Annotated[int, typer.Option("-n", help="How many last lines.")] = 10,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
) -> None:
    """The last lines of an agent's progress file; never blocks."""
    from orchestrator.records.tail import last_lines

    path = _known(responses, agent)
    for line in last_lines(path, n):
        typer.echo(line)


@app.command()
def tail(
    agent: str,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep following until it ends.")
    ] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
) -> None:
    """Print an agent's progress file (and with -f, follow it until the agent ends)."""
    import asyncio

    from orchestrator.control.readers import follow_file
    from orchestrator.records.rundir import RunDir, is_locked

    path = _known(responses, agent)
    rundir = RunDir(responses)
    done = asyncio.run(
        follow_file(path, follow=follow, out=sys.stdout, alive=lambda: is_locked(rundir))
    )
    if follow and not done:
        sys.stderr.write(f"tail: no orchestrator is running; {agent} will not write more\n")


@app.command()
def wait(
    agents: Annotated[list[str], typer.Argument(metavar="AGENT...")],
    any_: Annotated[bool, typer.Option("--any", help="Return when the first one ends.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 124).")
    ] = None,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
) -> None:
    """Block until the named agents have ended; exit 0 when every one succeeded."""
    import asyncio

    from orchestrator.control.readers import wait_for

    async def bounded() -> int:
        try:
            async with asyncio.timeout(timeout):
                return await wait_for(responses, agents, any_=any_, out=sys.stdout)
        except TimeoutError:
            sys.stdout.write(f"timed out after {timeout:g}s\n")
            return 124

    try:
        code = asyncio.run(bounded())
    except OrchestratorError as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command()
def cancel(
    agents: Annotated[list[str] | None, typer.Argument(metavar="AGENT...")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Raise the fence and stop every agent.")
    ] = False,
    force: Annotated[bool, typer.Option(help="SIGKILL at once, no grace period.")] = False,
    tree: Annotated[bool, typer.Option(help="Also stop the agents it spawned.")] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
) -> None:
    """Stop agents of the running orchestrator (or, if it is gone, their recorded processes)."""
    from orchestrator.control import channel, leftovers
    from orchestrator.errors import UnknownAgentError
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir, holder_pid

    if bool(agents) == all_:
        _fail(UsageError("error: name agents to cancel, or give --all (not both)"))
    rundir = RunDir(responses)
    payload = {"op": "cancel_all"} if all_ else {"op": "cancel", "agents": agents}
    try:
        answer = channel.request_live(rundir, {**payload, "tree": tree, "force": force})
    except OrchestratorError as exc:
        _fail(exc)
    if answer is not None:
        if not answer.get("ok"):
            sys.stderr.write(f"{answer.get('error', 'error: cancel failed')}\n")
            raise typer.Exit(int(answer.get("code", 1)))
        stopped = answer.get("stopped")
        typer.echo("cancelled: " + (", ".join(stopped) if stopped else "nothing left running")
                   if stopped is not None else "cancelling every agent")  # fmt: skip
        return
    journal = load(rundir.journal)
    for agent_id in agents or ():
        if agent_id not in journal.agents and agent_id not in journal.tasks:
            _fail(UnknownAgentError(agent_id))
    stopped = leftovers.stop_leftovers(
        rundir, None if all_ else list(agents or ()), grace=0 if force else 5, tree=tree
    )
    if stopped is None:  # a run holds the lock but its socket did not answer
        holder = holder_pid(rundir)
        sys.stderr.write(
            f"error: the orchestrator (pid {holder}) holds {responses} but does not answer "
            "on its control socket (hint: try again in a moment)\n"
        )
        raise typer.Exit(1)
    typer.echo("no orchestrator running; stopped: " + (", ".join(stopped) or "nothing"))


@app.command()
def watch(responses: ResponsesOpt = DEFAULT_RESPONSES) -> None:
    """A live dashboard of the current run, from the journal (Ctrl-C to leave)."""
    import asyncio

    from orchestrator.records.rundir import RunDir
    from orchestrator.view.watch import watch_run

    if not RunDir(responses).journal.exists():
        _fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    try:
        asyncio.run(watch_run(responses))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _known(responses: Path, agent: str) -> Path:
    """The agent's progress file; exit 2 when there is none (or the id could not be one)."""
    from orchestrator.control.readers import progress_path
    from orchestrator.errors import UnknownAgentError
    from orchestrator.records.rundir import check_entry

    try:
        path = progress_path(responses, agent)
        check_entry(path, os.lstat(path), "file")  # never a link, a FIFO, another's file
    except FileNotFoundError:
        _fail(UnknownAgentError(agent))
    except OrchestratorError as exc:
        _fail(exc)
    return path


def main() -> None:
    try:
        app()
    except OrchestratorError as exc:  # a command that forgot to map its error
        sys.stderr.write(f"{exc}\n")
        sys.exit(exc.exit_code)
