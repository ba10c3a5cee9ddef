"""Every task of the plan as a row, started or not: what it waits on, how it ended, what it cost.

A pure function of a snapshot, for views that show the whole plan (the web page): a task
with no agent yet is ``queued`` when its dependencies all succeeded (it waits for a slot) and
``waiting`` otherwise, with the dependencies it waits on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.view.snapshot import Snapshot


def task_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """One row per task, in plan order (tasks the graph does not name come last)."""
    graph: Mapping[str, list[str]] = snapshot.extra.get("graph") or {}
    settled = {str(t["id"]): t for t in snapshot.tasks}
    agents_of: dict[str, list[Mapping[str, Any]]] = {}
    for a in sorted(snapshot.agents, key=lambda a: a.get("started") or 0.0):
        agents_of.setdefault(str(a.get("task")), []).append(a)
    order = list(graph) + [tid for tid in settled if tid not in graph]
    rows = []
    for tid in order:
        mine = agents_of.get(tid, [])
        record = settled.get(tid, {})
        state = str(record.get("state") or (mine[-1].get("state") if mine else ""))
        waiting_on = [d for d in graph.get(tid, []) if _state(settled, agents_of, d) != "succeeded"]
        if not state:
            state = "waiting" if waiting_on else "queued"
        started = [a["started"] for a in mine if a.get("started")]
        ended = [a["ended"] for a in mine if a.get("ended")]
        rows.append(
            {
                "id": tid,
                "state": state,
                "waiting_on": waiting_on if state in ("waiting", "queued", "pending") else [],
                "depends_on": list(graph.get(tid, [])),
                "agents": [str(a["id"]) for a in mine],
                "started": min(started) if started else None,
                "ended": max(ended) if ended and state not in ("running", "blocked") else None,
                "cost_usd": round(sum(a.get("cost_usd") or 0.0 for a in mine), 6),
                "last_line": str(mine[-1].get("last_line") or "") if mine else "",
                "reason": str(record.get("reason") or ""),
                "added_by": record.get("added_by") if record.get("added") else None,
                "added": bool(record.get("added")),
            }
        )
    return rows


def summary(snapshot: Snapshot, rows: list[dict[str, Any]], *, now: float) -> dict[str, Any]:
    """Totals for a header: tasks done of all, elapsed time, cost against the budget."""
    ended = {"succeeded", "failed", "cancelled", "timed_out", "skipped", "escalated", "lost"}
    started = snapshot.run.get("started")
    end = snapshot.run.get("ended") or now
    return {
        "tasks": len(rows),
        "done": sum(1 for r in rows if r["state"] in ended | {"budget_exceeded"}),
        "succeeded": sum(1 for r in rows if r["state"] == "succeeded"),
        "running": sum(1 for a in snapshot.agents if a.get("state") == "running"),
        "elapsed": round(end - started, 3) if isinstance(started, int | float) else None,
        "cost_usd": round(sum(a.get("cost_usd") or 0.0 for a in snapshot.agents), 6),
        "budget_usd": snapshot.budget_usd,
        "build": snapshot.extra.get("build"),
        "escalations": list(snapshot.extra.get("escalations") or []),
    }


def status_json(snapshot: Snapshot, *, now: float) -> dict[str, Any]:
    """The `status --json` object: the run, its agents, every task as a row, the totals."""
    rows = task_rows(snapshot)
    return {**snapshot.as_status_json(), "board": rows, "totals": summary(snapshot, rows, now=now)}


def _state(
    settled: Mapping[str, Mapping[str, Any]],
    agents_of: Mapping[str, list[Mapping[str, Any]]],
    task_id: str,
) -> str:
    if task_id in settled:
        return str(settled[task_id].get("state"))
    mine = agents_of.get(task_id)
    return str(mine[-1].get("state")) if mine else "pending"
