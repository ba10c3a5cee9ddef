"""The three renderings of one bench run: a text table, a README table (markdown) and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.core import Figure, Row

HEADERS = ("fig", "what", "measured", "baseline", "ratio", "goal", "result")


def verdict(met: bool | None, *, error: bool = False) -> str:
    if error:
        return "ERROR"
    return "-" if met is None else "met" if met else "MISSED"


def _cells(row: Row) -> tuple[str, ...]:
    return (row.figure, row.what, row.measured, row.baseline, row.ratio, row.goal, verdict(row.met))


def _rows(figures: Sequence[Figure]) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for fig in figures:
        if fig.error is not None:
            out.append(((fig.id, fig.title, "-", "-", "-", "-", "ERROR"), fig.error))
            continue
        for row in fig.rows:
            out.append((_cells(row), row.note))
    return out


def text(figures: Sequence[Figure], machine: dict[str, Any], *, mode: str) -> str:
    rows = _rows(figures)
    widths = [len(h) for h in HEADERS]
    for cells, _ in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    lines = [
        f"orchestrator bench ({mode}): {machine['nproc']} CPUs, {machine['implementation']} "
        f"{machine['python']}, {machine['platform']}, {machine['date']}",
        "",
        "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    previous = ""
    for cells, note in rows:
        shown = ("" if cells[0] == previous else cells[0], *cells[1:])
        previous = cells[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
        if note:
            lines.append(" " * (widths[0] + 2) + "  note: " + note)
    met = sum(1 for f in figures for r in f.rows if r.met is True)
    missed = [f"{r.figure} {r.what}" for f in figures for r in f.rows if r.met is False]
    errors = [f.id for f in figures if f.error is not None]
    lines.append("")
    if mode == "quick":
        lines.append("quick mode: smaller sizes and one repeat; verdicts are indicative only")
    lines.append(
        f"goals met: {met}; missed: {len(missed)}" + (f" ({'; '.join(missed)})" if missed else "")
    )
    if errors:
        lines.append(f"figures that failed to run: {', '.join(errors)}")
    return "\n".join(lines)


def markdown(figures: Sequence[Figure], machine: dict[str, Any], *, mode: str) -> str:
    """The README's performance table, ready to paste."""

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        f"Measured by `python -m bench{' --quick' if mode == 'quick' else ''}` on "
        f"{machine['nproc']} CPUs, {machine['implementation']} {machine['python']} "
        f"({machine['platform']}), {machine['date'][:10]}. Medians of repeated runs, "
        "min-max in brackets; every baseline is measured in the same run.",
        "",
        "| Figure | What | Measured | Baseline | Ratio | Goal | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    previous = ""
    for cells, _ in _rows(figures):
        fig, what, measured, baseline, ratio, goal, result = (esc(c) for c in cells)
        fig, previous = ("" if fig == previous else fig), fig
        mark = {"met": "yes", "MISSED": "**no**", "ERROR": "error"}.get(result, "-")
        lines.append(f"| {fig} | {what} | {measured} | {baseline} | {ratio} | {goal} | {mark} |")
    return "\n".join(lines)


def from_json(text: str) -> tuple[list[Figure], dict[str, Any], str]:
    """Figures, machine and mode back from `as_json` output (to re-render a saved run)."""
    raw: dict[str, Any] = json.loads(text)
    figures = []
    machine: dict[str, Any] = {}
    mode = "full"
    for fid, obj in raw.items():
        fig = Figure(fid, obj["title"], data=obj.get("data", {}), error=obj.get("error"))
        fig.rows = [Row(figure=fid, **row) for row in obj.get("rows", [])]
        fig.seconds = obj.get("seconds", 0.0)
        figures.append(fig)
        machine = obj.get("machine", machine)
        mode = obj.get("mode", mode)
    return figures, machine, mode


def as_json(figures: Sequence[Figure], machine: dict[str, Any], *, mode: str) -> str:
    """One object keyed by figure id; each figure carries the machine it was measured on."""
    out: dict[str, Any] = {}
    for fig in figures:
        out[fig.id] = {
            "title": fig.title,
            "rows": [{k: v for k, v in asdict(r).items() if k != "figure"} for r in fig.rows],
            "met": None if fig.error or not fig.rows else all(r.met is not False for r in fig.rows),
            "error": fig.error,
            "data": fig.data,
            "seconds": round(fig.seconds, 2),
            "mode": mode,
            "machine": machine,
        }
    return json.dumps(out, indent=2, default=str)
