"""The live table of a running `orchestrator run`: every task of the plan, at screen cost.

One frame holds the rows that fit, in this order: running agents (tasks, fixers and build
checks; oldest first), then tasks that have not started (``waiting`` with the dependencies
they wait on, or ``queued`` for a slot, in plan order), then ended tasks (latest first); and
the totals of every task. The per-row work (labels, dependencies, costs) is done for the
shown rows only; the rest is one pass of plain counting over the records, and the live
loop (`console.run_live`) gives drawing at most a fixed share of its time, so a frame over
10,000 tasks costs what the screen shows plus that count (docs: README, performance).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from orchestrator.view.snapshot import Snapshot

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run
    from orchestrator.engine.state import AgentRecord, TaskRecord

ENDED = ("succeeded", "failed", "cancelled", "timed_out", "skipped", "escalated", "lost",
         "budget_exceeded")  # fmt: skip


def live_view(run: Run, *, rows: int, now: float | None = None) -> Snapshot:
    """The frame of the live table: at most ``rows`` rows, and every task and agent counted."""
    now = time.time() if now is None else now
    agents = Counter("stopping" if r.state == "running" and r.stop is not None else r.state
                     for r in run.agents.values())  # fmt: skip
    running = heapq.nsmallest(
        rows, (r for r in run.agents.values() if r.state == "running"),
        key=lambda r: r.started or 0.0,
    )  # fmt: skip
    shown = [_agent_row(run, r) for r in running]
    states: Counter[str] = Counter()
    queued = 0
    unstarted: list[TaskRecord] = []
    for tid, t in run.tasks.items():
        states[t.state] += 1
        if t.state == "pending":
            ready = run.frontier.unmet(tid) == 0
            queued += ready
            if len(shown) + len(unstarted) < rows:
                unstarted.append(t)
    shown += [_waiting_row(run, t) for t in unstarted]
    left = rows - len(shown)
    if left > 0:
        ended = heapq.nlargest(left, (t for t in run.tasks.values() if t.final),
                               key=lambda t: _ended_at(run, t))  # fmt: skip
        shown += [_ended_row(run, t) for t in ended]
    pending = states["pending"]
    totals = {
        "tasks": len(run.tasks),
        "done": sum(states[s] for s in ENDED),
        "succeeded": states["succeeded"],
        "running": agents["running"] + agents["stopping"],
        "queued": queued,
        "waiting": pending - queued,
        "elapsed": round(now - run.started_at, 3),
        "cost_usd": round(run.governor.spent_usd, 6),
        "budget_usd": run.plan.limits.budget_usd,
    }
    return Snapshot(
        run={"plan": run.plan.name, "state": "running", "started": run.started_at},
        agents=(),
        fence=run.governor.fence,
        budget_usd=run.plan.limits.budget_usd,
        spent_usd=run.governor.spent_usd,
        extra={"grace": run.plan.limits.grace},
        tally=dict(agents),
        live_rows=tuple(shown),
        totals=totals,
    )


def _row(task: str, state: str, agent: str, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"task": task, "state": state, "agent": agent, "started": None,
                            "ended": None, "cost_usd": 0.0, "last_line": "", "waiting_on": [],
                            "added_by": None}  # fmt: skip
    return base | more


def _agent_row(run: Run, r: AgentRecord) -> dict[str, Any]:
    trec = run.tasks.get(r.task_id)
    added_by = trec.added_by if trec is not None and r.role == "task" else None
    return _row(
        r.task_id or "-", "stopping" if r.stop is not None else r.state, r.id,
        started=r.started, cost_usd=r.cost_usd, last_line=r.last_line, added_by=added_by,
    )  # fmt: skip


def _waiting_row(run: Run, t: TaskRecord) -> dict[str, Any]:
    on = [d for d in t.task.depends_on if (dep := run.tasks.get(d)) is None
          or dep.state != "succeeded"]  # fmt: skip
    return _row(t.task.id, "waiting" if on else "queued", "-", waiting_on=on,
                last_line=f"on {', '.join(on)}" if on else "", added_by=t.added_by)  # fmt: skip


def _ended_at(run: Run, t: TaskRecord) -> float:
    last = run.agents.get(t.attempts[-1]) if t.attempts else None
    return (last.ended or 0.0) if last is not None else 0.0


def _ended_row(run: Run, t: TaskRecord) -> dict[str, Any]:
    mine = [run.agents[a] for a in (*t.attempts, *t.fixers) if a in run.agents]
    last = run.agents.get(t.attempts[-1]) if t.attempts else None
    return _row(
        t.task.id, t.state, last.id if last is not None else "-",
        started=last.started if last is not None else None,
        ended=last.ended if last is not None else None,
        cost_usd=sum(a.cost_usd for a in mine),
        last_line=(last.last_line if last is not None else "") or t.reason,
        added_by=t.added_by,
    )  # fmt: skip
