"""REPORT.md and timeline.svg: the run's final report, rendered from a snapshot (pure) and
written atomically; `orchestrator report` renders them again from the journal.

What plans, agents and builds said goes in through `_line` or `_cell`: one line each, without
escapes or control characters, ``|`` escaped in tables; so no reason, blocker or summary can
add a line, a heading or a table row of its own, or reach a terminal that shows the file.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.process.lines import one_line
from orchestrator.records.responses import REPORT, TIMELINE
from orchestrator.view import timeline
from orchestrator.view.snapshot import Snapshot


def _line(text: Any) -> str:
    return one_line(str(text if text not in (None, "") else "-"))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _cell(text: Any) -> str:
    return _line(text).replace("|", "\\|")


def render(snapshot: Snapshot) -> str:
    run = snapshot.run
    agents = {a["id"]: a for a in snapshot.agents}
    lines = [
        f"# Report: {_line(run.get('plan', '?'))}",
        "",
        f"- state: {_line(run.get('state', '?'))}",
        f"- run id: {_line(run.get('run_id', '-'))}",
        f"- started: {_when(run.get('started'))}",
        f"- ended: {_when(run.get('ended'))}",
    ]
    if snapshot.fence:
        lines.append(f"- stopped: {_line(snapshot.fence)}")
    if run.get("survivors"):
        pids = ", ".join(map(str, run["survivors"]))
        lines.append(f"- could not stop, even with SIGKILL: pids {pids}")
    if run.get("sandbox"):
        lines.append(f"- sandbox: {_line(run['sandbox'])}")
    for warning in run.get("sandbox_warnings") or ():
        lines.append(f"- warning: {_line(warning)}")
    lines.append(f"- timeline: [{TIMELINE}]({TIMELINE}) (who ran when, who waited on whom)")
    build = snapshot.extra.get("build")
    if build:
        lines.append(f"- build check: {_line(build)}")
    lines += [f"- {_line(d)}" for d in run.get("delivery_lines") or ()]
    total_in = sum(a.get("tokens_in") or 0 for a in snapshot.agents)
    total_out = sum(a.get("tokens_out") or 0 for a in snapshot.agents)
    cost = sum(a.get("cost_usd") or 0.0 for a in snapshot.agents)
    budget = f" of ${snapshot.budget_usd:.2f} budget" if snapshot.budget_usd is not None else ""
    lines += [
        f"- agents started: {len(snapshot.agents)}",
        f"- tokens: {total_in} in / {total_out} out; cost ${cost:.4f}{budget}",
        "",
        "## Tasks",
        "",
        "| task | state | attempts | duration | fixers | tokens | cost | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in snapshot.tasks:
        ids = list(task.get("attempts", [])) + list(task.get("fixers", []))
        mine = [agents[i] for i in ids if i in agents]
        duration = sum(
            (a.get("ended") or 0) - (a.get("started") or 0) for a in mine if a.get("ended")
        )
        tokens = sum((a.get("tokens_in") or 0) + (a.get("tokens_out") or 0) for a in mine)
        tcost = sum(a.get("cost_usd") or 0.0 for a in mine)
        lines.append(
            f"| {_cell(task['id'])} | {task['state']} | {len(task.get('attempts', []))} "
            f"| {duration:.1f}s | {_cell(', '.join(task.get('fixers', [])))} | {tokens} "
            f"| ${tcost:.4f} | {_cell(task.get('reason'))} |"
        )
    changed = [a for a in snapshot.agents if a.get("changes")]
    if changed:
        lines += ["", "## Changes", ""]
        for a in changed:
            files = ", ".join(a["changes"][:50]) + (" ..." if len(a["changes"]) > 50 else "")
            lines.append(f"- {_line(a['id'])} ({_line(a.get('task'))}): {_line(files)}")
    builds = [a for a in snapshot.agents if a.get("role") == "build"]
    if builds:
        lines += ["", "## Build checks", ""]
        for b in builds:
            lines.append(f"- {b['id']}: {b['state']} - {_cell(b.get('reason'))} ({b['id']}.md)")
    escalations = snapshot.extra.get("escalations", [])
    if escalations:
        lines += ["", "## Escalations: a human must act", ""]
        for esc in escalations:
            lines += [
                f"### {_line(esc['task'])}",
                "",
                f"- blocked by: {_line(esc['blocker'])}",
                f"- tried: {_line('; '.join(esc.get('tried', [])) or 'nothing')}",
                f"- why it escalated: {_line(esc['reason'])}",
                f"- next step: {_line(esc['next_step'])}",
                f"- files: {_line(', '.join(esc.get('files', [])))}",
                "",
            ]
    lines += [
        "",
        "## Agents",
        "",
        "| agent | role | state | parent | reason |",
        "|---|---|---|---|---|",
    ]
    for a in snapshot.agents:
        lines.append(
            f"| [{a['id']}]({a['id']}.md) | {a.get('role', 'task')} | {a['state']} "
            f"| {_cell(a.get('parent'))} | {_cell(a.get('reason'))} |"
        )
    return "\n".join(lines) + "\n"


def timeline_svg(snapshot: Snapshot) -> str:
    """The run's timeline (`orchestrator.view.timeline`) as SVG."""
    tl = timeline.build(snapshot.run, snapshot.agents, snapshot.extra.get("graph") or {})
    return timeline.svg(tl, title=f"{snapshot.run.get('plan', '?')}: timeline")


def write_all(responses: Path, snapshot: Snapshot) -> Path:
    """Write timeline.svg, then REPORT.md (which links it); the path of REPORT.md."""
    _write(responses, TIMELINE, timeline_svg(snapshot))
    return write(responses, render(snapshot))


def write(responses: Path, text: str) -> Path:
    """Write REPORT.md atomically (temp file + rename), never through a symlink."""
    return _write(responses, REPORT, text)


def _write(responses: Path, name: str, text: str) -> Path:
    target = responses / name
    tmp = responses / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk must not leave half a report behind
        exc.filename = exc.filename or str(target)
        raise
    return target
