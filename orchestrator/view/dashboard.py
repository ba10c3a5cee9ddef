"""Views as functions of a snapshot: the live table and the final summary (Rich renderables).

Every string that reaches Rich here is a `Text` built by `plain`: what plans, agents, models
and builds say is shown as it is, never read as Rich markup (a plan named ``[/]`` is a name,
not a closing tag) and never as terminal control (escapes and control characters go).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from orchestrator.process.lines import one_line
from orchestrator.view.snapshot import Snapshot

STATE_STYLE = {
    "running": "cyan",
    "stopping": "yellow",
    "succeeded": "green",
    "failed": "red",
    "blocked": "yellow",
    "cancelled": "magenta",
    "timed_out": "red",
    "skipped": "dim",
    "escalated": "bold red",
    "budget_exceeded": "red",
    "lost": "red",
    "pending": "dim",
}


def plain(value: object, style: str = "") -> Text:
    """Data as a one-line `Text`: no markup is parsed, no control sequence survives."""
    return Text(one_line(str(value if value is not None else "")), style=style)


def _elapsed(agent: dict[str, Any], now: float) -> str:
    started = agent.get("started")
    end = agent.get("ended") or (now if agent["state"] in ("running", "stopping") else None)
    if not started or end is None:
        return "-"  # not started, or it ended at a time nobody recorded (lost)
    return f"{max(end - started, 0.0):6.1f}s"


def rows_that_fit(console: Console) -> int:
    """Agent rows a live view can show in this terminal (the rest are summed up below)."""
    return max(console.size.height - 9, 3)


def render(snapshot: Snapshot, *, now: float | None = None, max_rows: int = 40) -> Group:
    """The live dashboard: one row per agent (running ones first), counts, fence and budget."""
    now = time.time() if now is None else now
    table = Table(expand=True, title=plain(f"orchestrator - {snapshot.run.get('plan', '?')}"))
    for name, kw in (
        ("agent", {"no_wrap": True}),
        ("state", {"no_wrap": True}),
        ("elapsed", {"justify": "right"}),
        ("tokens", {"justify": "right"}),
        ("cost", {"justify": "right"}),
        ("last line", {"overflow": "ellipsis", "no_wrap": True, "ratio": 1}),
    ):
        table.add_column(name, **kw)
    agents = sorted(
        snapshot.agents,
        key=lambda a: (a["state"] not in ("running", "stopping"), a.get("started") or 0),
    )
    for agent in agents[:max_rows]:
        state = agent["state"]
        added_by = agent.get("parent") if agent.get("role", "task") == "task" else None
        table.add_row(
            plain(agent["id"] + (f" (added by {added_by})" if added_by else "")),
            plain(state, STATE_STYLE.get(state, "")),
            plain(_elapsed(agent, now)),
            plain(f"{(agent.get('tokens_in') or 0) + (agent.get('tokens_out') or 0)}"),
            plain(f"${agent.get('cost_usd') or 0.0:.4f}"),
            plain(agent.get("last_line") or ""),
        )
    if len(agents) > max_rows:
        table.caption = plain(f"... and {len(agents) - max_rows} more agents")
    return Group(table, plain(footer(snapshot)))


def footer(snapshot: Snapshot) -> str:
    counts = snapshot.counts
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    line = "agents: " + (", ".join(parts) if parts else "none yet")
    if snapshot.budget_usd is not None:
        line += f" | budget ${snapshot.spent_usd:.4f} of ${snapshot.budget_usd:.2f}"
    if snapshot.fence:
        line += f" | fence up: {snapshot.fence}"
    stopping = counts.get("stopping", 0)
    if stopping:
        grace = snapshot.extra.get("grace")
        wait = f", up to {grace:g}s grace" if grace else ""
        again = (
            "; Ctrl-C again kills at once" if str(snapshot.fence).startswith("interrupted") else ""
        )
        line += f"\nstopping {stopping} agent(s){wait}{again}"
    return line


def summary(snapshot: Snapshot) -> Group:
    """What is printed when a run ends: the table of tasks, then every escalation."""
    return Group(_task_table(snapshot), *escalation_lines(snapshot))


def escalation_lines(snapshot: Snapshot) -> list[Text]:
    """Each escalation: why, what blocked it, what was tried, the next step (as in REPORT.md)."""
    out = []
    for esc in snapshot.extra.get("escalations", []):
        tried = "; ".join(map(str, esc.get("tried", []))) or "nothing"
        # what agents and builds said is data: one clean line each, never markup or control
        text = Text(one_line(f"escalated: {esc['task']}: {esc['reason']}") + "\n", style="bold red")
        text.append(one_line(f"  blocked by: {esc['blocker']}") + "\n")
        text.append(one_line(f"  tried: {tried}") + "\n")
        text.append(one_line(f"  next step: {esc['next_step']}"))
        out.append(text)
    return out


def _task_table(snapshot: Snapshot) -> Table:
    table = Table(title=plain(f"{snapshot.run.get('plan', '?')}: {snapshot.run.get('state', '?')}"))
    for name in ("task", "state", "attempts", "fixers", "reason"):
        table.add_column(name, overflow="fold")
    for task in snapshot.tasks:
        state = task["state"]
        table.add_row(
            plain(task["id"]),
            plain(state, STATE_STYLE.get(state, "")),
            plain(len(task.get("attempts") or [])),
            plain(", ".join(task.get("fixers") or []) or "-"),
            plain(task.get("reason") or ""),
        )
    return table
