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
from orchestrator.view import board
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


def _named(agent: dict[str, Any]) -> str:
    """An agent's id, with ``@node`` when it runs on a cluster node."""
    return str(agent["id"]) + (f" @{agent['node']}" if agent.get("node") else "")


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
    """The dashboard. Of a snapshot that knows the plan's graph (`status`, `watch`): one row
    per task, started or not, and the totals (`board_render`). Of a live run's frame
    (`snapshot.live_view`): one row per agent (running ones first), counts, fence, budget."""
    now = time.time() if now is None else now
    if snapshot.live_rows is not None:
        return live_render(snapshot, now=now, max_rows=max_rows)
    if snapshot.extra.get("graph"):
        return board_render(snapshot, now=now, max_rows=max_rows)
    table = Grid(LIVE_COLUMNS, title=one_line(f"orchestrator - {snapshot.run.get('plan', '?')}"))
    agents = heapq.nsmallest(
        max_rows,
        snapshot.agents,
        key=lambda a: (a["state"] not in ("running", "stopping"), a.get("started") or 0),
    )  # O(agents) plus O(rows) of rendering: a frame costs what the screen shows
    for agent in agents:
        state = agent["state"]
        tokens = (agent.get("tokens_in") or 0) + (agent.get("tokens_out") or 0)
        added_by = agent.get("parent") if agent.get("role", "task") == "task" else None
        table.rows.append(
            (
                (
                    one_line(
                        str(agent["id"])
                        + (f" @{agent['node']}" if agent.get("node") else "")
                        + (f" (added by {added_by})" if added_by else "")
                    ),
                    "",
                ),
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


BOARD_COLUMNS = (
    ("task", False, 40),
    ("state", False, 20),
    ("agent", False, 40),
    ("elapsed", True, 12),
    ("cost", True, 12),
    ("last line", False, 1_000),
)


def live_render(snapshot: Snapshot, *, now: float, max_rows: int = 40) -> Group:
    """A live frame (`live.live_view`): its rows, drawn by hand (`Grid`), then the totals
    of every task, counts of agents, fence and budget."""
    table = Grid(BOARD_COLUMNS, title=one_line(f"orchestrator - {snapshot.run.get('plan', '?')}"))
    rows = (snapshot.live_rows or ())[:max_rows]
    for r in rows:
        state = str(r["state"])
        task = str(r["task"]) + (f" (added by {r['added_by']})" if r.get("added_by") else "")
        started, ended = r.get("started"), r.get("ended")
        end = ended or (now if state in ("running", "stopping") else None)
        elapsed = f"{max(end - started, 0.0):.1f}s" if started and end is not None else "-"
        table.rows.append(
            (
                (one_line(task), ""),
                (one_line(state), STATE_STYLE.get(state, "")),
                (one_line(str(r["agent"])), ""),
                (elapsed, ""),
                (f"${r.get('cost_usd') or 0.0:.4f}", ""),
                (one_line(str(r.get("last_line") or "")), ""),
            )
        )
    totals = snapshot.totals or {}
    listed = sum(totals.get(k, 0) for k in ("running", "queued", "waiting", "done"))
    if listed > len(rows):
        table.caption = f"... and {listed - len(rows)} more rows (the totals count every task)"
    return Group(table, plain(format_totals(totals, snapshot.spent_usd)), plain(footer(snapshot)))


def board_render(snapshot: Snapshot, *, now: float, max_rows: int = 40) -> Group:
    """The live dashboard: one row per task of the plan (started or not: ``queued`` when it
    waits for a slot, ``waiting`` with what it waits on), one per agent outside the tasks
    (build checks and their fixers), running ones first; then totals, fence and budget."""
    table = Table(expand=True, title=plain(f"orchestrator - {snapshot.run.get('plan', '?')}"))
    for name, kw in (
        ("task", {"no_wrap": True}),
        ("state", {"no_wrap": True}),
        ("agent", {"no_wrap": True}),
        ("elapsed", {"justify": "right"}),
        ("cost", {"justify": "right"}),
        ("last line", {"overflow": "ellipsis", "no_wrap": True, "ratio": 1}),
    ):
        table.add_column(name, **kw)
    rows = board_rows(snapshot, now=now)
    for row in rows[:max_rows]:
        table.add_row(*(plain(v, STATE_STYLE.get(v, "") if i == 1 else "")
                        for i, v in enumerate(row)))  # fmt: skip
    if len(rows) > max_rows:
        table.caption = plain(f"... and {len(rows) - max_rows} more")
    return Group(table, plain(totals_line(snapshot, now=now)), plain(footer(snapshot)))


def board_rows(snapshot: Snapshot, *, now: float) -> list[tuple[str, ...]]:
    """The rows of the live table, as text: task, state, agent, elapsed, cost, last line."""
    tasks = board.task_rows(snapshot)
    named = {r["id"] for r in tasks}
    by_id = {str(a["id"]): a for a in snapshot.agents}
    out: list[tuple[bool, float, tuple[str, ...]]] = []
    for r in tasks:
        agent = by_id.get(r["agents"][-1]) if r["agents"] else None
        state = r["state"]
        if r["waiting_on"] and state in ("waiting", "pending"):
            state = "waiting"
        last = r["last_line"] or (f"on {', '.join(r['waiting_on'])}" if r["waiting_on"] else "")
        running = agent is not None and agent["state"] in ("running", "stopping")
        shown = agent["state"] if running and agent is not None else state
        task = r["id"] + (f" (added by {r['added_by']})" if r.get("added_by") else "")
        row = (task, shown, _named(agent) if agent else "-",
               _elapsed(agent, now) if agent else "-", f"${r['cost_usd']:.4f}", last)  # fmt: skip
        out.append((not running, r["started"] or now + 1, row))
    for a in snapshot.agents:
        if a.get("task") in named:
            continue
        running = a["state"] in ("running", "stopping")
        row = (str(a.get("task") or "-"), a["state"], _named(a), _elapsed(a, now),
               f"${a.get('cost_usd') or 0.0:.4f}", str(a.get("last_line") or ""))  # fmt: skip
        out.append((not running, a.get("started") or now + 1, row))
    out.sort(key=lambda item: (item[0], item[1]))
    return [row for _, _, row in out]


def totals_line(snapshot: Snapshot, *, now: float) -> str:
    """Tasks done of all, what the rest are doing, elapsed time, cost against the budget."""
    rows = board.task_rows(snapshot)
    totals = board.summary(snapshot, rows, now=now)
    totals |= {s: sum(1 for r in rows if r["state"] == s) for s in ("queued", "waiting")}
    return format_totals(totals | {"budget_usd": snapshot.budget_usd}, snapshot.spent_usd)


def format_totals(totals: dict[str, Any], spent_usd: float = 0.0) -> str:
    """``tasks: D of M done (S succeeded), R running, Q queued, W waiting | elapsed | cost``."""
    line = (
        f"tasks: {totals.get('done', 0)} of {totals.get('tasks', 0)} done "
        f"({totals.get('succeeded', 0)} succeeded), {totals.get('running', 0)} running, "
        f"{totals.get('queued', 0)} queued, {totals.get('waiting', 0)} waiting"
    )
    if totals.get("elapsed") is not None:
        line += f" | elapsed {_duration(totals['elapsed'])}"
    line += f" | cost ${max(totals.get('cost_usd') or 0.0, spent_usd):.4f}"
    if totals.get("budget_usd") is not None:
        line += f" of ${totals['budget_usd']:.2f}"
    return line


def plain_text(snapshot: Snapshot, *, now: float | None = None) -> str:
    """The live table as plain text for a pipe or a file: no box, no colour, nothing cut."""
    now = time.time() if now is None else now
    head = ("task", "state", "agent", "elapsed", "cost", "last line")
    rows = [head, *board_rows(snapshot, now=now)]
    cells = [tuple(one_line(c) for c in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head) - 1)]
    lines = [f"{snapshot.run.get('plan', '?')}: {snapshot.run.get('state', '?')}"]
    for row in cells:
        padded = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        lines.append(f"{padded}  {row[-1]}")
    lines += [totals_line(snapshot, now=now), footer(snapshot)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


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
    """What is printed when a run ends: the table of tasks (each escalation follows in one
    line: `console.outcome_lines`).

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
    return Group(_task_table(snapshot, shown), *more)


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
