"""Telling a person who walked away that the run ended: the plan's ``notify:`` command, run
once with the outcome in its environment, and the terminal's bell.

The command is a child like any other (its own process group, the allowlisted environment,
never the API key), bounded by ``notify.timeout``; what it prints goes to stderr prefixed
``notify:``, and its failure is reported there without changing the run's exit code.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.plan.model import Notify
from orchestrator.process.env import child_env
from orchestrator.process.lines import one_line
from orchestrator.process.spawn import run_streaming

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run


def outcome_env(
    run: Run, *, code: int, state: str, report: Path | None, run_id: str
) -> dict[str, str]:
    """The ``ORCHESTRATOR_*`` variables that describe how the run ended (docs/plan.md)."""
    tasks = list(run.tasks.values())
    succeeded = sum(1 for t in tasks if t.state == "succeeded")
    outcome = "succeeded" if code == 0 else "interrupted" if state == "interrupted" else "failed"
    build = run.repairs.build_state or "none"
    return {
        "ORCHESTRATOR_OUTCOME": outcome,
        "ORCHESTRATOR_EXIT_CODE": str(code),
        "ORCHESTRATOR_PLAN": run.plan.name,
        "ORCHESTRATOR_RUN_ID": run_id,
        "ORCHESTRATOR_TASKS": str(len(tasks)),
        "ORCHESTRATOR_SUCCEEDED": str(succeeded),
        "ORCHESTRATOR_BUILD": build,
        "ORCHESTRATOR_ESCALATIONS": str(len(run.repairs.escalations)),
        "ORCHESTRATOR_COST_USD": f"{run.governor.spent_usd:.4f}",
        "ORCHESTRATOR_REPORT": str(report.resolve()) if report is not None else "",
        "ORCHESTRATOR_SUMMARY": one_line(
            f"{run.plan.name}: {outcome}, {succeeded} of {len(tasks)} tasks succeeded, "
            f"build {build}"
        ),
    }


async def tell_end(run: Run, *, code: int, state: str, report: Path | None, run_id: str) -> None:
    """The end of ``run``, told as its plan's ``notify:`` asks (a terminal: stdout or stderr)."""
    plan = run.plan
    await notify_end(
        plan.notify,
        outcome_env(run, code=code, state=state, report=report, run_id=run_id),
        workspace=plan.workspace,
        grace=plan.limits.grace,
        tty=sys.stdout.isatty() or sys.stderr.isatty(),
    )


async def notify_end(
    spec: Notify,
    outcome: Mapping[str, str],
    *,
    workspace: Path,
    grace: float,
    tty: bool,
    write: Callable[[str], object] = sys.stderr.write,
) -> None:
    """Ring the bell (``spec.bell`` and a terminal) and run ``spec.command``, if any."""
    if spec.bell and tty:
        write("\a")
    if not spec.command:
        return
    env = child_env(
        agent_id="notify", run_id=outcome["ORCHESTRATOR_RUN_ID"], depth=0, source=os.environ
    )
    env.update(outcome)
    try:
        async with asyncio.timeout(spec.timeout):
            code = await run_streaming(
                list(spec.command),
                cwd=workspace,
                env=env,
                on_line=lambda _stream, line: _say(write, line),
                grace=grace,
                shell=spec.shell,
            )
    except TimeoutError:
        write(f"notify: stopped after {spec.timeout:g}s (notify.timeout)\n")
        return
    except OSError as exc:
        write(f"notify: cannot start {spec.command[0]!r}: {exc.strerror or exc}\n")
        return
    if code != 0:
        write(f"notify: the command exited {code}\n")


def _say(write: Callable[[str], object], line: str) -> None:
    write(f"notify: {one_line(line)}\n")
