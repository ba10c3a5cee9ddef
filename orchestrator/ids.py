"""The one home of ids: task ids, the ids of derived agents (retries, fixers, builds), run
ids, and which names may become files in the responses directory.

A task's first attempt is the task id itself; attempt n is ``<task>.<n>``; the fixers of a
blocker are ``fix-<task>-<n>`` (``fix-build-<n>`` for the build); build checks are
``build-<n>``. Task ids that could be mistaken for one of these are refused by the plan
loader, with `RESERVED_HINTS` as the hint.
"""

from __future__ import annotations

import os
import re
import time

TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TASK_ID_HINT = "ids are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A name that may become a file in the responses directory (an id plus a suffix)."""

_ATTEMPT_SUFFIX = re.compile(r".*\.[0-9]+")
RESERVED_HINTS = {
    "attempt": "later attempts are named <task>.2, <task>.3; use '-' or '_' before the number",
    "fix-": "fixer agents are named fix-<task>-<n>; pick another prefix",
    "build-": "build checks are named build-<n>; pick another prefix",
    "report": "REPORT.md is the run's final report; pick another id",
}


def reserved(task_id: str) -> str | None:
    """Which derived agent id (or file name) ``task_id`` could collide with, case blind;
    a key of `RESERVED_HINTS`, or None."""
    low = task_id.lower()
    if _ATTEMPT_SUFFIX.fullmatch(task_id):
        return "attempt"
    if low.startswith(("fix-", "build-")):
        return low[: low.index("-") + 1]
    return "report" if low == "report" else None


def agent_id_of(task_id: str, attempt: int) -> str:
    """The agent id of attempt ``attempt`` of a task."""
    return task_id if attempt <= 1 else f"{task_id}.{attempt}"


def task_of_attempt(agent_id: str) -> str | None:
    """The task whose attempt ``agent_id`` is (``<task>`` or ``<task>.<n>``); None for fixers
    and builds."""
    if agent_id.lower().startswith(("fix-", "build-")):
        return None
    head, dot, tail = agent_id.rpartition(".")
    return head if dot and tail.isdigit() else agent_id


def fixer_id(subject: str | None, n: int) -> str:
    """The ``n``-th fixer for a task's blockers (``subject`` None: the build's)."""
    return f"fix-{'build' if subject is None else subject}-{n}"


def build_id(n: int) -> str:
    """The ``n``-th build check of a run."""
    return f"build-{n}"


def is_file_name(name: str) -> bool:
    """Whether ``name`` may be a file name in the responses directory (no path, no '..')."""
    return "/" not in name and ".." not in name and FILE_NAME.fullmatch(name) is not None


def new_run_id() -> str:
    """A run id: start time, pid and randomness, sortable by start."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
