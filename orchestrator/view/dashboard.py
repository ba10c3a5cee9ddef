"""Views as functions of a snapshot: the live table and the final summary (Rich renderables).

Every string that reaches Rich here is a `Text` built by `plain`: what plans, agents, models
and builds say is shown as it is, never read as Rich markup (a plan named ``[/]`` is a name,
not a closing tag) and never as terminal control (escapes and control characters go).
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from orchestrator.process.lines import one_line
from orchestrator.view.grid import Grid
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


LIVE_COLUMNS = (
    ("agent", False, 40),
    ("state", False, 20),
    ("elapsed", True, 12),
    ("tokens", True, 12),
    ("cost", True, 12),
    ("last line", False, 1_000),
)
"""Name, right-justified, widest: the live table's columns (the last takes the rest)."""


def render(snapshot: Snapshot, *, now: float | None = None, max_rows: int = 40) -> Group:
    """The live dashboard: one row per agent (running ones first), counts, fence and budget."""
    now = time.time() if now is None else now
    table = Grid(LIVE_COLUMNS, title=one_line(f"orchestrator - {snapshot.run.get('plan', '?')}"))
    agents = heapq.nsmallest(
        max_rows,
        snapshot.agents,
        key=lambda a: (a["state"] not in ("running", "stopping"), a.get("started") or 0),
    )  # O(agents) plus O(rows) of rendering: a frame costs what the screen shows
    for agent in agents:
        state = agent["state"]
        tokens = (agent.get("tokens_in") or 0) + (agent.get("tokens_out") or 0)
        table.rows.append(
            (
                (one_line(str(agent["id"])), ""),
                (one_line(str(state)), STATE_STYLE.get(state, "")),
                (_elapsed(agent, now).strip(), ""),
                (str(tokens), ""),
                (f"${agent.get('cost_usd') or 0.0:.4f}", ""),
                (one_line(str(agent.get("last_line") or "")), ""),
            )
        )
    more = len(snapshot.agents) - len(agents) + snapshot.hidden
    if more > 0:
        table.caption = f"... and {more} more agents"
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


def summary(snapshot: Snapshot, *, max_rows: int | None = None) -> Group:
    """What is printed when a run ends: the table of tasks, then every escalation.

    With ``max_rows`` the table holds at most that many tasks, those that did not succeed
    first (in plan order), and says how many it left out: REPORT.md has every task."""
    shown = list(snapshot.tasks)
    more: list[Text] = []
    if max_rows is not None and len(shown) > max_rows:
        odd = [t for t in shown if t["state"] != "succeeded"]
        keep = {id(t) for t in (odd + [t for t in shown if t["state"] == "succeeded"])[:max_rows]}
        shown = [t for t in shown if id(t) in keep]
        ok = sum(1 for t in snapshot.tasks if t["state"] == "succeeded" and id(t) not in keep)
        left = len(snapshot.tasks) - len(shown)
        more.append(plain(f"... and {left} more tasks ({ok} succeeded); REPORT.md lists all"))
    return Group(_task_table(snapshot, shown), *more, *escalation_lines(snapshot))


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


def _task_table(snapshot: Snapshot, shown: list[dict[str, Any]]) -> Table:
    table = Table(title=plain(f"{snapshot.run.get('plan', '?')}: {snapshot.run.get('state', '?')}"))
    for name in ("task", "state", "attempts", "fixers", "reason"):
        table.add_column(name, overflow="fold")
    for task in shown:
        state = task["state"]
        table.add_row(
            plain(task["id"]),
            plain(state, STATE_STYLE.get(state, "")),
            plain(len(task.get("attempts") or [])),
            plain(", ".join(task.get("fixers") or []) or "-"),
            plain(task.get("reason") or ""),
        )
    return table
