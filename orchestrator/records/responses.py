"""Which directory may hold a run's files: checked before a run writes anything at all.

Agents' ids become file names (``<id>.md``, ``<id>.events.jsonl``) and a fresh run removes
the files the previous run named. So the responses directory must be a directory of the
run's own: not a link (whose target would get ``.run/``), not the workspace or a directory
above it, and holding nothing but what earlier runs wrote there (their journal names every
file) and hidden entries (no agent id starts with a dot). Then no task id, ``README`` say,
can overwrite or delete a file of the user's.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.records.journal import JournalReader, JournalState
from orchestrator.records.rundir import RunDir, check_entry, refused

SHOWN = 5
"""Foreign names listed in the error (then "and N more")."""


def check_responses(responses: Path, workspace: Path) -> None:
    """Refuse (`RunDirRefused`, exit 3) a responses directory a run must not write into."""
    try:
        st = os.lstat(responses)
    except FileNotFoundError:
        st = None  # created by the run; it cannot hold anything yet
    if st is not None:
        check_entry(responses, st, "directory")
    real, ws = Path(os.path.realpath(responses)), Path(os.path.realpath(workspace))
    if real == ws or real in ws.parents:
        what = "the workspace" if real == ws else "a directory above the workspace"
        raise refused(
            f"--responses {responses}",
            f"is {what}; agents' progress files would land among its files",
            "give a directory of its own, e.g. --responses agent-responses",
        )
    if st is None:
        return
    foreign = _foreign_entries(responses)
    if foreign:
        names = ", ".join(foreign[:SHOWN]) + (
            f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else ""
        )
        raise refused(
            f"--responses {responses}",
            f"holds files its journal does not name: {names}; an agent id could overwrite them",
            "give a new or empty directory, or move those files",
        )


REPORT = "REPORT.md"
TIMELINE = "timeline.svg"


def run_files(state: JournalState) -> set[str]:
    """The names of the files the run a journal describes wrote in its responses directory."""
    ids = set(state.agents) | set(state.tasks)
    names = {f"{i}{ext}" for i in ids for ext in (".md", ".events.jsonl")}
    return names | {REPORT, TIMELINE} if state.run else names


def _foreign_entries(responses: Path) -> list[str]:
    """Entries of ``responses`` that neither an earlier run's journal names nor are hidden."""
    rundir = RunDir(responses)
    ours: set[str] = set()
    if os.path.lexists(rundir.run):
        check_entry(rundir.run, os.lstat(rundir.run), "directory")
        reader = JournalReader(rundir.journal)
        reader.poll()
        ours = run_files(reader.state)
    with os.scandir(responses) as entries:
        found = sorted((e.name, e.is_file(follow_symlinks=False)) for e in entries)
    # A name of ours that is not a plain file any more (a link, a directory) is not ours.
    return [n for n, plain in found if not n.startswith(".") and not (plain and n in ours)]
