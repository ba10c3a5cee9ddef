"""The one home of ids: task ids, the ids of derived agents (retries, fixers, builds), run
ids, and which names may become files in the responses directory.

Every id that fits `TASK_ID` is a valid task id (``build-docs``, ``fix-tests``, ``lint.2``).
Derived agents are named with ``+`` (`SEP`), which a task id can never contain, so no derived
id can collide with a task's: attempt n of a task is ``<task>+<n>`` (its first attempt is the
task id itself); the fixers of a task's blockers are ``<task>+fix<n>``; the run's build checks
are ``+build<n>`` and their fixers ``+build+fix<n>`` (an id that starts with ``+`` belongs to
the run, not to a task). Runs recorded before this scheme named them ``<task>.<n>``,
``fix-<task>-<n>``, ``build-<n>``; their journals still load and resume (`collisions`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

SEP = "+"
"""Joins a task id and what derived an agent from it; never part of a task id."""
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TASK_ID_HINT = "ids are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
FILE_NAME = re.compile(r"[A-Za-z0-9+][A-Za-z0-9._+-]{0,127}")
"""A name that may become a file in the responses directory (an id plus a suffix)."""

RESERVED_HINTS = {
    "report": "REPORT.md is the run's final report: a task named REPORT would write over it; "
    "pick another id (Report or report are fine)",
}


def reserved(task_id: str) -> str | None:
    """The run's own file ``task_id`` would write over (a key of `RESERVED_HINTS`), or None."""
    return "report" if task_id == "REPORT" else None


def agent_id_of(task_id: str, attempt: int) -> str:
    """The agent id of attempt ``attempt`` of a task."""
    return task_id if attempt <= 1 else f"{task_id}{SEP}{attempt}"


def task_of_attempt(agent_id: str) -> str | None:
    """The task whose attempt ``agent_id`` is (``<task>`` or ``<task>+<n>``); None for fixers
    and builds."""
    head, sep, tail = agent_id.partition(SEP)
    if not sep:
        return agent_id
    return head if head and tail.isdigit() else None


def fixer_id(subject: str | None, n: int) -> str:
    """The ``n``-th fixer for a task's blockers (``subject`` None: the build's)."""
    return f"{build_id(None) if subject is None else subject}{SEP}fix{n}"


def build_id(n: int | None) -> str:
    """The ``n``-th build check of a run (None: the stem of the build's agents)."""
    return f"{SEP}build" + ("" if n is None else str(n))


def collisions(task_ids: Iterable[str], agents: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Task ids that a journal (``agents``: its agent records) already uses for an agent of
    something else: a plan resumed against a run recorded under the earlier naming
    (``build-1`` was a build check) must not take over that agent's records."""
    return sorted(
        tid for tid in task_ids
        if tid in agents and (agents[tid].get("task") != tid or agents[tid].get("role", "task")
                              not in ("task", None))
    )  # fmt: skip


def is_file_name(name: str) -> bool:
    """Whether ``name`` may be a file name in the responses directory (no path, no '..')."""
    return "/" not in name and ".." not in name and FILE_NAME.fullmatch(name) is not None


def new_run_id() -> str:
    """A run id: start time, pid and randomness, sortable by start."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"
