"""REPORT.md: the run's final report, rendered from a snapshot (pure) and written atomically."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from orchestrator.view.snapshot import Snapshot


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _cell(text: Any) -> str:
    return str(text if text not in (None, "") else "-").replace("|", "\\|").replace("\n", " ")


def render(snapshot: Snapshot) -> str:
    run = snapshot.run
    agents = {a["id"]: a for a in snapshot.agents}
    lines = [
        f"# Report: {run.get('plan', '?')}",
        "",
        f"- state: {run.get('state', '?')}",
        f"- run id: {run.get('run_id', '-')}",
        f"- started: {_when(run.get('started'))}",
        f"- ended: {_when(run.get('ended'))}",
    ]
    if snapshot.fence:
        lines.append(f"- stopped: {snapshot.fence}")
    if run.get("survivors"):
        pids = ", ".join(map(str, run["survivors"]))
        lines.append(f"- could not stop, even with SIGKILL: pids {pids}")
    build = snapshot.extra.get("build")
    if build:
        lines.append(f"- build check: {build}")
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
                f"### {esc['task']}",
                "",
                f"- blocked by: {esc['blocker']}",
                f"- tried: {'; '.join(esc.get('tried', [])) or 'nothing'}",
                f"- why it escalated: {esc['reason']}",
                f"- next step: {esc['next_step']}",
                f"- files: {', '.join(esc.get('files', []))}",
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


def write(responses: Path, text: str) -> Path:
    """Write REPORT.md atomically (temp file + rename), never through a symlink."""
    target = responses / "REPORT.md"
    tmp = responses / f".REPORT.md.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)
    return target
