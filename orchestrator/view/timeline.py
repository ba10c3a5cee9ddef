"""The timeline of a run: one bar per attempt on a time axis, what each waited for, and the
critical path; drawn as plain SVG. Pure functions of a snapshot (no I/O, no clock).

For every agent the timeline finds when it *could* have started (``ready``) and the agent
whose end made it ready (its gate):

- a task's first attempt: when the last of its dependencies settled (the run's start if it
  has none); the wait before that is the task waiting for its dependencies, the wait after it
  is the task waiting for a free slot under the limits;
- a retry: when the fixer that worked on its blocker ended (else the attempt before it);
- a fixer: when the agent whose blocker it takes ended;
- a build check: when the last agent that ended before it did.

The critical path runs back from the agent that ended last, gate by gate: shortening any bar
or wait on it would have shortened the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import escape

COLOURS = {
    "succeeded": "#3b9c5a",
    "running": "#3a7bd5",
    "blocked": "#e0a030",
    "failed": "#d64545",
    "timed_out": "#c0392b",
    "cancelled": "#8e8e8e",
    "budget_exceeded": "#8e44ad",
    "lost": "#5d4037",
    "escalated": "#e67e22",
    "skipped": "#bdbdbd",
}
ROW = 16
LABEL = 220
WIDTH = 1200
TOP = 56


@dataclass(frozen=True, slots=True)
class Bar:
    agent: str
    task: str
    role: str
    state: str
    start: float
    end: float
    """When it ended, or the timeline's end for an agent still running."""
    ready: float
    """When it could have started: the wait before ``start`` is for a free slot."""
    gate: str | None
    """The agent whose end made it ready (None: the run's start)."""
    critical: bool = False
    added_by: str | None = None
    """For an attempt of a task added while the run went on: the agent that added it."""


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    bars: tuple[Bar, ...]
    critical: tuple[str, ...]
    """Agent ids on the critical path, first to last."""
    waits: Mapping[str, tuple[float, float]]
    """Task id -> (seconds waiting for its dependencies, seconds waiting for a slot)."""


def build(
    snapshot_run: Mapping[str, Any],
    agents: Sequence[Mapping[str, Any]],
    graph: Mapping[str, Sequence[str]],
    *,
    now: float | None = None,
) -> Timeline:
    """The timeline of a run from its snapshot's run, agents and task graph.

    ``now`` ends the bars of agents still running (default: the run's end, else the last time
    anything shows).
    """
    started = [a for a in agents if isinstance(a.get("started"), int | float)]
    first = min((float(a["started"]) for a in started), default=None)
    # nothing started yet: the picture begins (and ends) now, not at the epoch
    t0 = _num(snapshot_run.get("started")) or first or now or 0.0
    ends = [a["ended"] for a in started if isinstance(a.get("ended"), int | float)]
    last = max([*ends, *(a["started"] for a in started), t0])
    t_end = now if now is not None else (_num(snapshot_run.get("ended")) or last)
    ordered = sorted(started, key=lambda a: (a["started"], str(a.get("id"))))
    end_of = {str(a["id"]): _num(a.get("ended")) or t_end for a in ordered}
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for a in ordered:
        by_task.setdefault(str(a.get("task")), []).append(a)

    bars: list[Bar] = []
    for a in ordered:
        aid, start = str(a["id"]), float(a["started"])
        gate = _gate(a, by_task, graph, end_of, ordered)
        ready = end_of[gate] if gate is not None else t0
        ready = min(max(ready, t0), start)
        task, role, state = str(a.get("task")), str(a.get("role") or "task"), str(a.get("state"))
        parent = a.get("parent") if role == "task" else None
        by = str(parent) if parent else None
        bars.append(Bar(aid, task, role, state, start, max(end_of[aid], start), ready, gate,
                        added_by=by))  # fmt: skip
    critical = _critical_path(bars)
    marked = tuple(
        replace(b, critical=True) if b.agent in critical else b
        for b in bars
    )  # fmt: skip
    waits = {
        b.task: (b.ready - t0, b.start - b.ready)
        for b in marked
        if b.role == "task" and b.agent == b.task
    }
    return Timeline(t0, max(t_end, t0), marked, tuple(critical), waits)


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _gate(
    a: Mapping[str, Any],
    by_task: Mapping[str, list[Mapping[str, Any]]],
    graph: Mapping[str, Sequence[str]],
    end_of: Mapping[str, float],
    ordered: Sequence[Mapping[str, Any]],
) -> str | None:
    """The agent whose end made ``a`` ready, or None when only the run's start did."""
    start, role, task = float(a["started"]), a.get("role") or "task", str(a.get("task"))

    def latest(ids: list[str]) -> str | None:
        done = [i for i in ids if end_of.get(i, start + 1) <= start + 1e-6]
        return max(done, key=lambda i: end_of[i], default=None)

    if role == "fixer":
        parent = a.get("parent")
        return str(parent) if isinstance(parent, str) and parent in end_of else None
    if role == "build":
        return latest([str(b["id"]) for b in ordered if b is not a])
    before = [str(b["id"]) for b in by_task.get(task, []) if float(b["started"]) < start]
    if before:  # a retry: the fixer that worked on its blocker, else the attempt before it
        fixers = [
            str(b["id"]) for b in ordered
            if b.get("role") == "fixer" and b.get("task") == task and float(b["started"]) < start
        ]  # fmt: skip
        return latest(fixers) or latest(before)
    deps = [str(lst[-1]["id"]) for d in graph.get(task, ()) if (lst := by_task.get(d))]
    adder = a.get("parent")  # a task added at run time: it was ready no earlier than its adder
    return latest(deps) or (str(adder) if isinstance(adder, str) and adder in end_of else None)


def _critical_path(bars: Sequence[Bar]) -> list[str]:
    if not bars:
        return []
    index = {b.agent: b for b in bars}
    last = max(bars, key=lambda b: (b.end, b.start))
    path = [last.agent]
    seen = {last.agent}
    while (gate := index[path[-1]].gate) is not None and gate in index and gate not in seen:
        path.append(gate)
        seen.add(gate)
    return path[::-1]


# --- drawing ---------------------------------------------------------------------------------


def svg(timeline: Timeline, *, title: str) -> str:
    """The timeline as a standalone SVG: a row per agent, bars coloured by outcome, the wait
    for a slot as a thin grey bar before each, the critical path outlined."""
    span = max(timeline.end - timeline.start, 1e-3)
    scale = (WIDTH - LABEL - 20) / span
    height = TOP + ROW * len(timeline.bars) + 40

    def x(t: float) -> float:
        return LABEL + (t - timeline.start) * scale

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="8" y="36" fill="#555">{_legend(timeline, span)}</text>',
    ]
    step = _tick(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = x(timeline.start + tick)
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{height - 30}" '
            f'stroke="#eee"/><text x="{tx:.1f}" y="{TOP - 9}" text-anchor="middle" '
            f'fill="#777">{_seconds(tick)}</text>'
        )
        tick += step
    for row, bar in enumerate(timeline.bars):
        y = TOP + row * ROW
        colour = COLOURS.get(bar.state, "#999999")
        label = bar.agent if bar.role == "task" else f"{bar.agent} ({bar.role})"
        if bar.added_by:
            label = f"{bar.agent} (by {bar.added_by})"
        out.append(f'<text x="8" y="{y + 11}">{escape(label[:36])}</text>')
        if bar.start > bar.ready:
            waited = bar.start - bar.ready
            out.append(
                f'<rect x="{x(bar.ready):.1f}" y="{y + 6}" width="{waited * scale:.1f}" '
                f'height="3" fill="#cfcfcf"><title>waited {_seconds(waited)} for a slot'
                "</title></rect>"
            )
        stroke = ' stroke="#111" stroke-width="2"' if bar.critical else ""
        tip = f"{bar.agent}: {bar.state}, {_seconds(bar.end - bar.start)}"
        if bar.agent in timeline.waits:
            deps, slot = timeline.waits[bar.agent]
            tip += f"; waited {_seconds(deps)} for dependencies, {_seconds(slot)} for a slot"
        out.append(
            f'<rect x="{x(bar.start):.1f}" y="{y + 2}" '
            f'width="{max((bar.end - bar.start) * scale, 1.0):.1f}" height="{ROW - 5}" '
            f'fill="{colour}"{stroke}><title>{escape(tip)}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(timeline: Timeline, span: float) -> str:
    crit = " → ".join(timeline.critical[:8]) + (" → …" if len(timeline.critical) > 8 else "")
    text = f"{len(timeline.bars)} agents over {_seconds(span)}; critical path: {crit or '-'}"
    return escape(text)


def _tick(span: float) -> float:
    """A round step that puts at most 12 ticks on ``span`` seconds, however long it is."""
    for step in (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 12:
            return float(step)
    hours = math.ceil(span / 12 / 3600)
    return 3600.0 * hours


def _seconds(s: float) -> str:
    if s < 10:
        return f"{s:.2f}s"
    if s < 120:
        return f"{s:.0f}s"
    return f"{s / 60:.1f}m"
