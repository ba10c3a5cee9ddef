"""A frozen picture of a run, the one thing views render: the live dashboard, `status`, REPORT.md.

It is built either from a live `scheduler.Run` or from a journal on disk, so `status` in
another terminal and the display of the running orchestrator show the same thing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.records.journal import JournalState
from orchestrator.records.tail import last_said

if TYPE_CHECKING:
    from orchestrator.engine.scheduler import Run
    from orchestrator.engine.state import AgentRecord

AGENT_KEYS = (
    "id", "task", "kind", "state", "parent", "attempt", "pid", "started", "ended",
    "tokens_in", "tokens_out", "cost_usd", "last_line", "node",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    run: dict[str, Any]
    agents: tuple[dict[str, Any], ...]
    tasks: tuple[dict[str, Any], ...] = ()
    fence: str | None = None
    budget_usd: float | None = None
    spent_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    tally: dict[str, int] | None = None
    """Agents per state when ``agents`` holds only some of them (`live.live_view`)."""
    live_rows: tuple[dict[str, Any], ...] | None = None
    """The rows of a live frame (`live.live_view`): tasks and running agents, screen-sized."""
    totals: dict[str, Any] | None = None
    """Every task counted, for a live frame's totals line."""

    @property
    def counts(self) -> dict[str, int]:
        if self.tally is not None:
            return dict(self.tally)
        return dict(Counter(a["state"] for a in self.agents))

    @property
    def hidden(self) -> int:
        """Agents of the run that ``agents`` leaves out (a view showing only its top rows)."""
        return sum(self.counts.values()) - len(self.agents) if self.tally is not None else 0

    def as_status_json(self) -> dict[str, Any]:
        """The `status --json` object (docs/commands.md)."""
        keys = ("plan", "state", "started", "ended", "pid", "sandbox", "sandbox_warnings")
        run = {k: self.run.get(k) for k in keys}
        return {"run": run, "agents": [{k: a.get(k) for k in AGENT_KEYS} for a in self.agents]}


def _agent_row(r: AgentRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "task": r.task_id,
        "kind": r.kind,
        "role": r.role,
        "state": _shown_state(r),
        "parent": r.parent,
        "attempt": r.attempt,
        "pid": r.pid,
        "node": r.node,
        "started": r.started,
        "ended": r.ended,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "cost_usd": round(r.cost_usd, 6),
        "last_line": r.last_line,
        "reason": r.reason,
        "changes": [c.removeprefix("changed: ") for c in r.changes if c.startswith("changed:")],
    }


def _shown_state(r: AgentRecord) -> str:
    return "stopping" if r.state == "running" and r.stop is not None else r.state


def from_run(run: Run, *, state: str = "running") -> Snapshot:
    agents = tuple(_agent_row(r) for r in run.agents.values())
    tasks = tuple(
        {
            "id": t.task.id,
            "state": t.state,
            "attempts": list(t.attempts),
            "fixers": list(t.fixers),
            "reason": t.reason,
            "added": t.added,
            "added_by": t.added_by,
        }
        for t in run.tasks.values()
    )
    return Snapshot(
        run={
            "plan": run.plan.name,
            "state": state,
            "started": run.started_at,
            "ended": run.ended_at,
            "pid": None,
            "run_id": run.settings.run_id,
            "delivery_lines": list(getattr(run.places, "delivered", ())),
        },
        agents=agents,
        tasks=tasks,
        fence=run.governor.fence,
        budget_usd=run.plan.limits.budget_usd,
        spent_usd=run.governor.spent_usd,
        extra={
            "escalations": run.repairs.escalations,
            "build": run.repairs.build_state,
            "graph": {t.id: list(t.depends_on) for t in run.plan.tasks},
            "grace": run.plan.limits.grace,
        },
    )


LOST_REASON = "its orchestrator is gone"


def from_journal(journal: JournalState, *, alive: bool) -> Snapshot:
    """From a journal on disk. A run said to be running whose lock is free was interrupted,
    and the agents it says are running are ``lost``: nothing runs them any more."""
    run = dict(journal.run)
    gone = run.get("state") == "running" and not alive
    if gone:
        run["state"] = "interrupted"

    def state_of(a: dict[str, Any]) -> str:
        state = str(a.get("state", "pending"))
        if state == "running" and gone:
            return "lost"
        if state == "running" and a.get("stopping"):
            return "stopping"
        return state

    agents = tuple(
        {"id": aid, **{k: a.get(k) for k in AGENT_KEYS if k != "id"}, "reason": a.get("reason", ""),
         "role": a.get("role", "task"), "changes": _changes(a.get("changes"))}
        | {"state": state_of(a), "tokens_in": a.get("tokens_in", 0),
           "tokens_out": a.get("tokens_out", 0), "cost_usd": a.get("cost_usd", 0.0),
           "last_line": a.get("last_line", "")}
        | ({"reason": LOST_REASON} if gone and a.get("state") == "running" else {})
        for aid, a in journal.agents.items()
    )  # fmt: skip
    of_task = _agents_by_task(journal)
    tasks = tuple(
        {"id": tid, **of_task.get(tid, {"attempts": [], "fixers": []}), **t}
        for tid, t in journal.tasks.items()
    )
    return Snapshot(
        run=run,
        agents=agents,
        tasks=tasks,
        fence=run.get("fence"),
        budget_usd=run.get("budget_usd"),
        spent_usd=float(run.get("spent_usd") or 0.0),
        extra={
            "escalations": list(run.get("escalations") or []),
            "build": run.get("build"),
            "graph": graph_of_journal(run, journal.tasks),
            "grace": run.get("grace"),
        },
    )


def _changes(recorded: Any) -> list[str]:
    """A journal's ``[[path, added, removed], ...]`` as the lines a progress file shows."""
    lines = []
    for item in recorded if isinstance(recorded, list) else ():
        if isinstance(item, list) and len(item) == 3:
            path, added, removed = item
            binary = added is None or removed is None
            lines.append(f"{path} (binary)" if binary else f"{path} +{added} -{removed}")
    return lines


def graph_of_journal(
    run: dict[str, Any], tasks: dict[str, dict[str, Any]] | None = None
) -> dict[str, list[str]]:
    """Every task of the plan (in plan order) -> its dependencies, from the run's records;
    then the tasks added while it went on (from their own records), in the order added."""
    deps = run.get("depends_on") or {}
    graph = {str(t): list(deps.get(t, [])) for t in run.get("fingerprints") or deps}
    added = sorted((int(r["added"]), tid, r.get("depends_on") or [])
                   for tid, r in (tasks or {}).items() if isinstance(r.get("added"), int)
                   and r["added"] > 0 and tid not in graph)  # fmt: skip
    graph.update((tid, list(d)) for _, tid, d in added)
    return graph


def _agents_by_task(journal: JournalState) -> dict[str, dict[str, list[str]]]:
    """Each task's attempts and fixers, from the agents the journal recorded for it (one pass
    over the agents: a view rebuilt several times a second must not cost tasks x agents)."""
    mine: dict[Any, list[tuple[float, str, Any]]] = {}
    for aid, a in journal.agents.items():
        mine.setdefault(a.get("task"), []).append((a.get("started") or 0.0, aid, a.get("role")))
    return {
        tid: {
            "attempts": [aid for _, aid, role in agents if role in ("task", None)],
            "fixers": [aid for _, aid, role in agents if role == "fixer"],
        }
        for tid, agents in ((tid, sorted(found)) for tid, found in mine.items())
    }


def with_last_lines(snap: Snapshot, responses: Path) -> Snapshot:
    """Running (and lost) agents get their last line from their progress file.

    The journal records an agent's last line only when it ends (the hot path writes progress
    files, not the journal), so views built from the journal read it here, cheaply.
    """
    agents = tuple(
        {**a, "last_line": last_said(responses, a["id"])}
        if a.get("state") in ("running", "stopping", "lost") and not a.get("last_line")
        else a
        for a in snap.agents
    )
    return replace(snap, agents=agents)
