"""One `orchestrator run`: checks before start, the lock and journal, signals, display, report.

Everything here is edge wiring around `scheduler.Run`; the CLI calls `check_environment`
before anything is written, then `run_plan` inside its one ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from orchestrator.agents.base import Agent
from orchestrator.agents.pool import AgentPool
from orchestrator.cluster import remote_agents
from orchestrator.control import channel, leftovers, notify, quota
from orchestrator.engine.scheduler import Run
from orchestrator.engine.state import RunSettings, TaskRecord
from orchestrator.errors import (
    EnvironmentProblem,
    RunDirRefused,
    RunError,
    StorageFailed,
)
from orchestrator.gateway.shared import GatewaySettings
from orchestrator.ids import new_run_id
from orchestrator.isolation.setup import deliver_run, open_workspaces, refuse_oversized
from orchestrator.plan.model import Plan
from orchestrator.preflight import run_depth
from orchestrator.process import orphans
from orchestrator.process.env import TOKEN_VAR
from orchestrator.process.guard import GUARD
from orchestrator.process.warm import WARM, WarmSandboxes
from orchestrator.records import history
from orchestrator.records.journal import Journal, load
from orchestrator.records.resume import (
    ResumePlan,
    added_tasks,
    fingerprint,
    plan_resume,
    reopen,
    resume_command,
    settle_lost,
    tail_command,
)
from orchestrator.records.rundir import RunDir, RunLock
from orchestrator.sandbox.decision import SandboxDecision
from orchestrator.sandbox.scratch import prune_dead
from orchestrator.view import console, report, snapshot


@dataclass(frozen=True)
class RunOptions:
    responses: Path
    mode: Literal["async", "batch"] = "async"
    resume: bool = False
    live: bool = False
    json: bool = False
    web: int | None = None
    """Serve the web view on this port (0: any free one) while the run goes on."""
    workspace_override: Path | None = None
    """The command line's ``--workspace``, recorded so the resume hint can repeat it."""
    cluster: str | None = None  # --cluster ADDRESS: the agents run on this Ray cluster
    sandbox: SandboxDecision | None = None
    """How agents are confined (`orchestrator.sandbox.decision.check`); None: unconfined."""
    keep_open: bool = False
    """`run --keep-open`: once its tasks are done the run waits for added ones until cancelled."""


async def run_plan(
    plan: Plan,
    opts: RunOptions,
    *,
    agents: Callable[[str], Agent] | None = None,
) -> int:
    """Run the plan to its end; returns its exit code (docs/commands.md).

    A file that cannot be written before the run starts (a full disk, a file-size limit, a
    tampered ``.run/``) is `RunDirRefused` (exit 3), nothing started; once it runs, a failed
    write stops it like a signal would, and `StorageFailed` (exit 1) says so at the end.
    """
    await refuse_oversized(plan)  # before the lock and the journal: nothing written
    rundir = RunDir(opts.responses)
    lock = RunLock(rundir)
    try:
        await asyncio.to_thread(lock.acquire)  # it may wait a moment for a probing reader
    except OSError as exc:
        raise _unusable(exc, rundir.lock) from None
    try:
        plan = quota.inherit_depth(plan, os.environ)
        parent = quota.Parent.from_env(os.environ)
        if parent is None:
            return await _run_locked(plan, opts, rundir, agents=agents)
        plan, granted = await quota.lease_plan(parent, plan)
        used = quota.Used()
        try:
            return await _run_locked(plan, opts, rundir, agents=agents, parent=parent, used=used)
        finally:
            await asyncio.to_thread(parent.release, granted - used.agents)
    finally:
        lock.release()


def _unusable(exc: OSError, path: Path) -> RunDirRefused:
    """A write or open that failed before the run started, as one line naming the file."""
    where = exc.filename or path
    return RunDirRefused(
        f"error: cannot write {where}: {exc.strerror or exc}; nothing was started"
        + _space_hint(exc.errno)
    )


def _space_hint(code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return " (hint: free some space on that file system)"
    if code == errno.EFBIG:
        return " (hint: a file-size limit is set: see ulimit -f)"
    return ""


async def _open_journal(
    plan: Plan, opts: RunOptions, rundir: RunDir
) -> tuple[Journal, str, ResumePlan | None]:
    """Read the last run's journal, stop what it left, and open this run's journal."""
    old = await asyncio.to_thread(load, rundir.journal)  # a journal can be megabytes
    if old.run.get("run_id") and old.run.get("state") == "running":
        # the last orchestrator died without ending its run: stop what it left behind
        await asyncio.to_thread(leftovers.stop_recorded, old, None, grace=plan.limits.grace)
        await asyncio.to_thread(leftovers.outlast_guard, old)  # its sweep is over
    resumed = None
    if opts.resume:
        plan, added, notes = added_tasks(old, plan)
        resumed = plan_resume(old, plan)
        ids = {a.task.id for a in added}
        resumed = replace(resumed, added=tuple(t for t in resumed.added if t not in ids),
                          grown=tuple(added), grown_notes=tuple(notes))  # fmt: skip
    if resumed is None:
        # the previous run's files move to .runs/<its id>/ (`orchestrator runs` lists them)
        await asyncio.to_thread(history.archive_previous, rundir, old)
    run_id = (old.run.get("run_id") if resumed else None) or new_run_id()
    journal = Journal(rundir.journal, fresh=resumed is None)
    if resumed is not None:
        try:
            settle_lost(opts.responses, journal, resumed.lost)
            reopen(journal, resumed, plan)
        except OSError:
            journal.close()
            raise
    return journal, run_id, resumed


async def _run_locked(
    plan: Plan,
    opts: RunOptions,
    rundir: RunDir,
    *,
    agents: Callable[[str], Agent] | None,
    parent: quota.Parent | None = None,
    used: quota.Used | None = None,
) -> int:
    orphans.set_child_subreaper()
    orphans.set_not_dumpable()
    try:
        journal, run_id, resumed = await _open_journal(plan, opts, rundir)
        if resumed is not None:  # with the tasks added while the run went on
            plan = replace(plan, tasks=(*plan.tasks, *(a.task for a in resumed.grown)))
    except OSError as exc:
        raise _unusable(exc, rundir.journal) from None
    for note in resumed.notes() if resumed is not None else ():
        sys.stderr.write(note + "\n")
    how = {
        "plan_file": str(plan.source.resolve()) if plan.source else None,
        "workspace_override": str(opts.workspace_override) if opts.workspace_override else None,
        "cluster": opts.cluster,
    }
    exports = quota.exports(rundir.socket)
    places = await open_workspaces(plan, opts.responses, run_id, journal, resumed)
    pool = AgentPool(plan)
    sandbox = opts.sandbox or SandboxDecision("off", None)
    mode = plan.sandbox_mode if opts.sandbox is not None else "off"  # the decision's mode
    remote = remote_agents(plan, pool, opts.cluster, run_id, opts.responses, places, sandbox=mode)
    settings = RunSettings(
        exports=exports,
        responses=opts.responses,
        run_id=run_id,
        mode=opts.mode,
        base_depth=run_depth(os.environ),
        resume_hint=resume_command(how, opts.responses),
        tail_hint=tail_command(opts.responses),
        gateway=GatewaySettings(host=remote.cluster.driver_ip() if remote else "127.0.0.1"),
        sandbox=opts.sandbox.confinement if opts.sandbox else None,
        keep_open=opts.keep_open,
    )
    if settings.sandbox is not None:  # what killed runs left: their owners are gone
        await asyncio.to_thread(prune_dead, settings.sandbox.scratch)
    for warning in sandbox.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    live = opts.live and sys.stdout.isatty()
    printer = None if live or opts.json else console.PlainPrinter()
    run = Run(
        plan,
        settings,
        agents=agents or remote or pool,
        journal=journal,
        on_event=printer,
        done_tasks=sorted({*(resumed.done if resumed else ()), *getattr(places, "landed", ())}),
        prior_attempts=resumed.attempts if resumed else {},
        grown={
            a.task.id: TaskRecord(a.task, depth=a.depth, added=a.added, added_by=a.added_by)
            for a in (resumed.grown if resumed else ())
        },
        upstream=parent.charge if parent is not None else None,
        places=places,
    )
    loop = asyncio.get_running_loop()
    # Handlers from before the journal says "running" until after it says how the run ended:
    # a signal in between always ends in a recorded state, never in a bare KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, run.interrupt, sig)
    survivors: list[int] = []
    try:
        async with _open_web(opts):  # the page outlives the run's end: it shows it
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(pool.aclose)
                lend = functools.partial(quota.handle, run, token=exports[TOKEN_VAR])
                try:
                    if remote is not None:  # each node decided its own confinement
                        await stack.enter_async_context(remote.cluster.session())
                        for warning in remote.cluster.warnings:
                            sys.stderr.write(f"warning: {warning}\n")
                        more = (*sandbox.warnings, *remote.cluster.warnings)
                        sandbox = replace(sandbox, warnings=more)
                    await stack.enter_async_context(
                        channel.open_control_server(run, rundir.socket, more=lend)
                    )
                    guard = None
                    if settings.sandbox is None:  # its guard, up before the first spawns
                        GUARD.covers(run_id)
                        guard = GUARD.record()
                    journal.record(
                        "run", run_id=run_id, plan=plan.name, pid=os.getpid(), mode=opts.mode,
                        state="running", workspace=str(plan.workspace),
                        budget_usd=plan.limits.budget_usd,
                        fingerprints={t.id: fingerprint(t) for t in plan.tasks},
                        depends_on={t.id: list(t.depends_on) for t in plan.tasks if t.depends_on},
                        grace=plan.limits.grace,
                        sandbox=sandbox.summary, sandbox_warnings=list(sandbox.warnings),
                        guard=guard, **how,
                    )  # fmt: skip
                except EnvironmentProblem:  # a refused .run/ file, an unusable cluster
                    journal.close()
                    raise
                except OSError as exc:
                    journal.close()
                    raise _unusable(exc, rundir.socket) from None
                # Sandboxes started ahead for the run's spawns (`orchestrator.process.warm`).
                warm = WarmSandboxes() if settings.sandbox is not None else None
                warm_set = WARM.set(warm)
                try:
                    async with asyncio.TaskGroup() as tg:
                        helpers = [tg.create_task(_reap_orphans_forever())]
                        if parent is not None:
                            helpers.append(tg.create_task(parent.run_forwarder()))
                        if live:
                            await console.run_live(run)
                        else:
                            await run.execute()
                        for helper in helpers:
                            helper.cancel()
                    if printer is not None:  # the agents' last lines before the delivery's
                        await run.recorder.written()
                        printer.flush()
                    given = "branch" if run.interrupted else None  # it says how on stderr
                    await deliver_run(places, plan, how=given, record=journal.record)
                finally:
                    WARM.reset(warm_set)
                    if warm is not None:  # before the sweep: those processes are no survivors
                        await warm.close()
                    if printer is not None:
                        printer.flush()
                    survivors = await asyncio.to_thread(orphans.stop_run, run_id)
                    GUARD.forget(run_id)  # nothing of the run is left for it to stop
                    if settings.sandbox is not None:  # its private temp directories
                        settings.sandbox.spares.forget()
                        await asyncio.to_thread(shutil.rmtree, settings.sandbox.scratch, True)
                    if parent is not None and used is not None:
                        used.agents = run.governor.started
                        await parent.flush()
            code, ended = _finish(run, journal, opts, survivors, sandbox)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    # After the handlers: Ctrl-C during the notify command stops it (and the command only).
    await notify.tell_end(run, code=code, state=ended[0], report=ended[1], run_id=run_id)
    if ended[2] is not None:
        raise ended[2]
    return code


def _finish(
    run: Run, journal: Journal, opts: RunOptions, survivors: list[int], sandbox: SandboxDecision
) -> tuple[int, tuple[str, Path | None, StorageFailed | None]]:
    """Record how the run ended, write REPORT.md, print the summary; the exit code and the
    ending (state, REPORT.md, the error to raise once the run's end was told).

    After a failed write (`Recorder.failure`) the run is ``interrupted`` (its journal's last
    records land in the space it keeps in reserve) and `StorageFailed` is raised last. A run
    that could not stop every process it started names them and never exits 0. ``sandbox``:
    how the run was confined, with what the cluster's nodes said of their own."""
    stopped_by = run.recorder.failure
    final_state = "interrupted" if run.interrupted or stopped_by else "finished"
    code = run.exit_code()
    if survivors:  # never pretend: the run could not stop everything it started
        code = code or 1
        sys.stderr.write(
            f"error: could not stop {len(survivors)} process(es) of the run, even with "
            f"SIGKILL: pids {', '.join(map(str, survivors))}\n"
        )
    journal.record("run", state=final_state, ended=run.ended_at or time.time(),
                   exit_code=code, spent_usd=run.governor.spent_usd,
                   fence=run.governor.fence, survivors=survivors or None,
                   escalations=run.repairs.escalations,
                   build=run.repairs.build_state)  # fmt: skip
    journal.close()
    snap = snapshot.from_run(run, state=final_state)
    snap = replace(snap, run={**snap.run, "pid": os.getpid(), "survivors": survivors,
                              "sandbox": sandbox.summary,
                              "sandbox_warnings": list(sandbox.warnings)})  # fmt: skip
    try:
        written: Path | None = report.write_all(opts.responses, snap)
    except OSError as exc:
        written, unwritten = None, f"cannot write {exc.filename}: {exc.strerror or exc}"
    console.print_summary(snap, written, as_json=opts.json)
    if stopped_by is not None:
        problem = StorageFailed(
            f"error: {stopped_by}; the run was stopped and its journal says interrupted "
            "(hint: make room or lift the file-size limit, then: "
            f"orchestrator run {run.plan.source or 'PLAN'} --resume)"
        )
        return 1, (final_state, written, problem)
    if written is None:
        return 1, (final_state, None, StorageFailed(
            f"error: {unwritten}; the run ended {final_state} (its journal says so) "
            "but its report is missing (hint: make room; orchestrator status shows the run)"
        ))  # fmt: skip
    return code, (final_state, written, None)


@contextlib.asynccontextmanager
async def _open_web(opts: RunOptions) -> AsyncIterator[None]:
    """`run --web`: the web view in a child process for as long as the run goes on."""
    if opts.web is None:
        yield
        return
    from orchestrator.web.server import open_in_process

    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(open_in_process(opts.responses, port=opts.web))
        except (RunError, OSError, TimeoutError) as exc:  # the run goes on without its page
            sys.stderr.write(f"web: the page cannot be served ({exc}); the run goes on\n")
        else:
            sys.stderr.write(f"web: {url}\n")
        sys.stderr.flush()
        yield


async def _reap_orphans_forever(interval: float = 0.5) -> None:
    """As child subreaper we adopt double-forked descendants; reap them when they die.

    On the loop's own thread (a waitid probe, and a /proc scan only when something is
    waitable), so it can never run in the middle of a spawn and take asyncio's child.
    """
    while True:
        await asyncio.sleep(interval)
        orphans.reap_orphans()
