"""Run history: the runs a responses directory has seen, each under its own run id.

The current (newest) run writes where it always did: ``<responses>/<agent>.md``, REPORT.md and
``.run/journal.jsonl``. When a fresh run starts, the previous run's files are moved, not
deleted, to ``<responses>/.runs/<run-id>/`` in the same layout (its journal at
``.runs/<run-id>/.run/journal.jsonl``), so every command that reads a run works on an archived
one by pointing at that directory (``--run ID``). Nothing is removed except by `prune`
(``orchestrator runs prune --keep N``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.records.journal import JournalState, load
from orchestrator.records.responses import run_files
from orchestrator.records.rundir import RunDir, check_entry

RUNS = ".runs"
"""The archive of earlier runs, hidden in the responses directory (no agent id starts with
a dot)."""


def archive_dir(responses: Path) -> Path:
    return responses / RUNS


def archive_previous(rundir: RunDir, old: JournalState) -> Path | None:
    """Move the files of the run ``old`` describes (and its journal) to ``.runs/<run-id>/``;
    the directory they went to, or None when there was no run to keep."""
    run_id = old.run.get("run_id")
    if not isinstance(run_id, str) or not run_id or not os.path.exists(rundir.journal):
        return None
    base = archive_dir(rundir.responses)
    _ensure_dir(base)
    dest = base / run_id
    n = 1
    while os.path.lexists(dest):  # the same id archived before (a resumed run ended twice)
        n += 1
        dest = base / f"{run_id}.{n}"
    os.mkdir(dest)
    os.mkdir(dest / ".run")
    for name in sorted(run_files(old)):
        path = rundir.responses / name
        if "/" not in name and path.is_file() and not path.is_symlink():
            os.rename(path, dest / name)
    os.rename(rundir.journal, dest / ".run" / "journal.jsonl")
    return dest


@dataclass(frozen=True)
class RunEntry:
    """One run of a responses directory, as `orchestrator runs` lists it."""

    run_id: str
    where: Path
    current: bool
    run: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        started, ended = self.run.get("started"), self.run.get("ended")
        duration = ended - started if isinstance(started, float | int) and ended else None
        return {
            "id": self.run_id,
            "current": self.current,
            "plan": self.run.get("plan"),
            "started": started,
            "ended": ended,
            "duration": round(duration, 3) if duration is not None else None,
            "state": self.run.get("state"),
            "exit_code": self.run.get("exit_code"),
            "cost_usd": self.run.get("spent_usd"),
            "responses": str(self.where),
        }


def list_runs(responses: Path) -> list[RunEntry]:
    """Every run recorded in ``responses``, oldest first; the current one last."""
    out: list[RunEntry] = []
    base = archive_dir(responses)
    if os.path.lexists(base):
        check_entry(base, os.lstat(base), "directory")
        for entry in os.scandir(base):
            where = Path(entry.path)
            journal = RunDir(where).journal
            if entry.is_dir(follow_symlinks=False) and os.path.exists(journal):
                out.append(RunEntry(entry.name, where, False, load(journal).run))
    out.sort(key=lambda e: (e.run.get("started") or 0.0, e.run_id))
    current = RunDir(responses).journal
    if os.path.exists(current):
        run = load(current).run
        out.append(RunEntry(str(run.get("run_id") or "current"), responses, True, run))
    return out


def run_responses(responses: Path, run_id: str | None) -> Path:
    """The directory holding run ``run_id`` (None, or the current run's id: ``responses``);
    `UsageError` (exit 2) when there is no such run."""
    if run_id is None:
        return responses
    for entry in list_runs(responses):
        if entry.run_id == run_id:
            return entry.where
    raise UsageError(
        f"error: no run {run_id!r} in {responses} (hint: orchestrator runs lists them)"
    )


def prune(responses: Path, *, keep: int) -> list[str]:
    """Delete archived runs beyond the newest ``keep``; the ids deleted (never the current)."""
    archived = [e for e in list_runs(responses) if not e.current]
    doomed = archived[: max(len(archived) - keep, 0)]
    for entry in doomed:
        shutil.rmtree(entry.where)
    return [e.run_id for e in doomed]


def _ensure_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path)
        st = os.lstat(path)
    check_entry(path, st, "directory")
