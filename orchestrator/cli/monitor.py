"""The commands that read or steer a run from any terminal: status, peek, tail, wait, watch,
cancel, report and serve. They work from the run's files and its control socket."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli import DEFAULT_RESPONSES, ResponsesOpt, RunOpt, app, fail, run_dir
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.process.lines import one_line

if TYPE_CHECKING:
    from orchestrator.control.readers import Located


@app.command()
def status(
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Every agent of the current or last run, from the journal.

    Exit codes: 0, 2 no run recorded in --responses, 3 a tampered .run/.
    """
    responses = run_dir(responses, run)
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir, is_locked
    from orchestrator.view import snapshot
    from orchestrator.view.snapshot import with_last_lines

    rundir = RunDir(responses)
    if not rundir.journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
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
    if snap.run.get("state") == "interrupted":
        from orchestrator.records.resume import resume_command

        lost = [a["id"] for a in snap.agents if a["state"] == "lost"]
        gone = f"; lost with its orchestrator: {', '.join(lost)}" if lost else ""
        sys.stderr.write(
            f"status: the run was interrupted{gone} (hint: continue it with "
            f"{resume_command(journal.run, responses)})\n"
        )
    for warning in journal.run.get("sandbox_warnings") or ():
        sys.stderr.write(f"status: warning: {one_line(str(warning))}\n")
    import time

    from orchestrator.cli.checkouts import pool_use
    from orchestrator.view import board, dashboard

    pool = pool_use(journal.run.get("pool"))
    if json_out:
        shown = board.status_json(snap, now=time.time())
        typer.echo(json.dumps({**shown, **({"pool": pool} if pool else {})}))
        return
    from rich.console import Console

    console = Console()
    if console.is_terminal:
        console.print(dashboard.render(snap, max_rows=10_000))
    else:  # a pipe or a file: plain lines, nothing cut at 80 columns
        sys.stdout.write(dashboard.plain_text(snap))
    if pool:
        mb = pool["bytes"] / 1024**2
        typer.echo(f"checkouts: {pool['checkouts']} in {pool['path']}, {mb:.1f} MB on disk")


@app.command()
def serve(
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port.")] = 0,
    parent: Annotated[int | None, typer.Option(hidden=True)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Serve the web view of the run in --responses on 127.0.0.1 until Ctrl-C.

    It prints a URL with a random token; requests without it are refused.

    Exit codes: 130 after Ctrl-C, 2 no run recorded, 3 the port cannot be used.
    """
    history, responses = responses, run_dir(responses, run)
    import asyncio

    from orchestrator.errors import EnvironmentProblem
    from orchestrator.records.rundir import RunDir
    from orchestrator.web.server import WebServer, serve_forever

    if parent is not None:  # started by `run --web`: never outlive that run
        from orchestrator.process.orphans import die_with_parent

        if not die_with_parent(parent):
            raise typer.Exit(1)
    elif not RunDir(responses).journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))

    def ready(server: WebServer) -> None:
        if json_out:
            typer.echo(json.dumps({"url": server.url, "responses": str(responses)}))
        else:
            typer.echo(f"serving the run in {responses} at {server.url}")

    try:
        asyncio.run(serve_forever(WebServer(responses, history=history, port=port), ready=ready))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except OSError as exc:
        fail(EnvironmentProblem(f"error: cannot serve on port {port}: {exc.strerror or exc}"))


@app.command()
def report(
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Write REPORT.md and timeline.svg again from the journal of the current or last run.

    Exit codes: 0 written, 2 no run recorded in --responses.
    """
    responses = run_dir(responses, run)
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir, is_locked
    from orchestrator.view import report as report_view
    from orchestrator.view import snapshot

    rundir = RunDir(responses)
    if not rundir.journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    snap = snapshot.from_journal(load(rundir.journal), alive=is_locked(rundir))
    written = report_view.write_all(responses, snap)
    if json_out:
        from orchestrator.records.responses import TIMELINE

        timeline = written.parent / TIMELINE
        typer.echo(json.dumps({"report": str(written), "timeline": str(timeline)}))
        return
    typer.echo(f"report: {written}")


@app.command()
def peek(
    agent: str,
    n: Annotated[int, typer.Option("-n", min=0, help="How many last lines (0 or more).")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
) -> None:
    """The last lines of an agent's progress file (a task's latest attempt); never blocks.

    Exit codes: 0, 2 unknown agent or task, or no run recorded.
    """
    responses = run_dir(responses, run)
    from orchestrator.control.readers import pending_line
    from orchestrator.records.tail import last_lines

    where, alive = _locate(responses, agent)
    if where.agent is None:
        said = pending_line(where, alive=alive)
        typer.echo(
            json.dumps({"agent": None, "task": agent, "lines": [said]}) if json_out else said
        )
        return
    lines = last_lines(_file_of(responses, agent, where.agent), n)
    if json_out:
        typer.echo(json.dumps({"agent": where.agent, "task": where.task, "lines": lines}))
        return
    for line in lines:
        typer.echo(line)


@app.command()
def tail(
    agent: str,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep following until it ends.")
    ] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
) -> None:
    """Print an agent's progress file (a task's latest attempt); -f follows it to the end.

    Exit codes: 0, 2 unknown agent or task, or no run recorded.
    """
    responses = run_dir(responses, run)
    import asyncio

    from orchestrator.control.readers import follow_file, follow_name, pending_line
    from orchestrator.records.rundir import RunDir, is_locked

    where, alive = _locate(responses, agent)
    rundir = RunDir(responses)
    if not follow:
        if where.agent is None:
            typer.echo(pending_line(where, alive=alive))
            return
        path = _file_of(responses, agent, where.agent)
        asyncio.run(follow_file(path, follow=False, out=sys.stdout))
        return
    if where.agent is not None and where.task is None:
        _file_of(responses, agent, where.agent)  # an agent without a file is unknown
    done = asyncio.run(
        follow_name(responses, agent, out=sys.stdout, alive=lambda: is_locked(rundir))
    )
    if not done:
        sys.stderr.write(f"tail: no orchestrator is running; {agent} will not write more\n")


@app.command()
def wait(
    agents: Annotated[list[str], typer.Argument(metavar="AGENT...")],
    any_: Annotated[bool, typer.Option("--any", help="Return when the first one ends.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds (exit 124).")
    ] = None,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    run: RunOpt = None,
) -> None:
    """Block until the named agents have ended (a task: its final state).

    Exit codes: 0 every one succeeded, 1 one did not, 2 unknown agent, 124 timed out.
    """
    responses = run_dir(responses, run)
    import asyncio
    import io

    from orchestrator.control.readers import wait_for

    out = io.StringIO() if json_out else sys.stdout

    async def bounded() -> int:
        try:
            async with asyncio.timeout(timeout):
                return await wait_for(responses, agents, any_=any_, out=out)
        except TimeoutError:
            if not json_out:
                out.write(f"timed out after {timeout:g}s\n")
            return 124

    try:
        code = asyncio.run(bounded())
    except OrchestratorError as exc:
        fail(exc)
    if isinstance(out, io.StringIO):  # "<agent>: <state>" lines; ids hold no ": "
        ended = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
        typer.echo(json.dumps({"ended": ended, "timed_out": code == 124, "exit_code": code}))
    raise typer.Exit(code)


@app.command()
def cancel(
    agents: Annotated[list[str] | None, typer.Argument(metavar="AGENT...")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Raise the fence and stop every agent.")
    ] = False,
    force: Annotated[bool, typer.Option(help="SIGKILL at once, no grace period.")] = False,
    tree: Annotated[bool, typer.Option(help="Also stop the agents it spawned.")] = False,
    after_turn: Annotated[
        bool,
        typer.Option(
            "--after-turn", help="Let its model answer in flight finish; stop it at its next."
        ),
    ] = False,
    responses: ResponsesOpt = DEFAULT_RESPONSES,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Stop agents of the running orchestrator (or, if it is gone, their recorded processes).

    Exit codes: 0 (also when already ended), 1 the orchestrator does not answer, 2 unknown
    agent or wrong options.
    """
    from orchestrator.control import channel, leftovers
    from orchestrator.errors import UnknownAgentError
    from orchestrator.records.journal import load
    from orchestrator.records.rundir import RunDir, holder_pid

    if bool(agents) == all_:
        fail(UsageError("error: name agents to cancel, or give --all (not both)"))
    if after_turn and (all_ or tree or force):
        fail(UsageError("error: --after-turn names agents, without --all, --tree or --force"))
    rundir = RunDir(responses)
    payload: dict[str, object] = {"op": "cancel", "agents": agents, "after_turn": after_turn}
    if all_:
        payload = {"op": "cancel_all"}
    try:
        answer = channel.request_live(rundir, {**payload, "tree": tree, "force": force})
    except OrchestratorError as exc:
        fail(exc)
    if answer is not None:
        if not answer.get("ok"):
            sys.stderr.write(f"{answer.get('error', 'error: cancel failed')}\n")
            raise typer.Exit(int(answer.get("code", 1)))
        stopped = answer.get("stopped")
        if json_out:
            how = "after_turn" if after_turn else "all" if stopped is None else "cancelled"
            typer.echo(json.dumps({"orchestrator": True, how: stopped}))
            return
        if after_turn:
            typer.echo("stopping after their turn: " + (", ".join(stopped or ()) or "nothing"))
            return
        typer.echo("cancelled: " + (", ".join(stopped) if stopped else "nothing left running")
                   if stopped is not None else "cancelling every agent")  # fmt: skip
        return
    journal = load(rundir.journal)
    for agent_id in agents or ():
        if agent_id not in journal.agents and agent_id not in journal.tasks:
            fail(UnknownAgentError(agent_id))
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
    if json_out:
        typer.echo(json.dumps({"orchestrator": False, "stopped": stopped}))
        return
    typer.echo("no orchestrator running; stopped: " + (", ".join(stopped) or "nothing"))


@app.command()
def watch(responses: ResponsesOpt = DEFAULT_RESPONSES, run: RunOpt = None) -> None:
    """A live dashboard of the current run, from the journal (Ctrl-C to leave).

    Exit codes: 0 the run ended, 130 left with Ctrl-C, 2 no run recorded.
    """
    responses = run_dir(responses, run)
    import asyncio

    from orchestrator.records.rundir import RunDir
    from orchestrator.view.watch import watch_run

    if not RunDir(responses).journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    try:
        asyncio.run(watch_run(responses))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _locate(responses: Path, name: str) -> tuple[Located, bool]:
    """What ``name`` stands for in the run recorded in ``responses``; exit 2 when nothing."""
    from orchestrator.control.readers import load_located
    from orchestrator.errors import UnknownAgentError
    from orchestrator.records.rundir import RunDir

    if not RunDir(responses).journal.exists():
        fail(UsageError(f"error: no run recorded in {responses} (hint: orchestrator run PLAN)"))
    try:
        return load_located(responses, name)
    except UnknownAgentError as exc:
        fail(exc)


def _file_of(responses: Path, name: str, agent_id: str) -> Path:
    """The progress file of ``agent_id`` (which ``name`` stands for); exit 2 when missing."""
    from orchestrator.control.readers import progress_path
    from orchestrator.errors import UnknownAgentError
    from orchestrator.records.rundir import check_entry

    try:
        path = progress_path(responses, agent_id)
        check_entry(path, os.lstat(path), "file")  # never a link, a FIFO, another's file
    except FileNotFoundError:
        fail(UnknownAgentError(name))
    except OrchestratorError as exc:
        fail(exc)
    if agent_id != name:
        sys.stderr.write(f"{name}: its latest attempt is {agent_id} ({path.name})\n")
    return path
