"""What a blocker is and how it is told apart: normalised signatures, and the fixer's prompt.

Pure text functions used by the recovery policy (`recovery`): two reports of the same failure
must get the same signature (line numbers, temp paths, hex ids and times do not count), and a
fixer must be told everything a person would need to remove the blocker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

Source: TypeAlias = Literal["agent", "build", "timeout", "stall"]

NEVER_FIXED_KINDS: frozenset[str] = frozenset({"config", "budget", "permission"})
CONFIG_EXIT_CODES: frozenset[int] = frozenset({126, 127})
"""A build command that cannot run (not executable, not found) is the plan's fault, not code's."""


def is_fixable(state: str, *, kind: str = "", fix_timeouts: bool = False) -> bool:
    """Whether an attempt that ended in ``state`` is a blocker a fixer may try.

    Only ``blocked`` is, and ``timed_out`` when the plan opts in. Never ``failed`` (the agent
    gave up on its own work), ``cancelled``, ``budget_exceeded``, ``skipped``, ``lost``, nor any
    ``config`` or ``budget`` failure kind: a fixer cannot install a program or raise a budget.
    """
    if kind in NEVER_FIXED_KINDS:
        return False
    return state == "blocked" or (fix_timeouts and state == "timed_out")


# --- signatures -----------------------------------------------------------------------------

_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d\d-\d\d[t ][\d:.,]+(?:z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d{1,2}:\d\d:\d\d(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"(?:/private)?(?:/var/folders/\S+?/t|(?:/var)?/tmp)/[^\s/:'\"]+"), "<tmp>"),
    (re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b0x[0-9a-f]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{6,}\b"), "<hex>"),
    (re.compile(r"(?<![a-z_])\d+(?:\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)  # fmt: skip
_ERRORISH = re.compile(r"error|exception|fatal|panic|traceback", re.IGNORECASE)
_SUMMARY_LINE = re.compile(r"^\s*(?:=+|-+|make(?:\[\d+\])?: \*\*\*)")


def normalise(text: str) -> str:
    """Lowercase, with timestamps, temp dirs, hex ids and numbers as placeholders, spaces collapsed.

    Numbers glued to a letter stay (``E501``, ``py311``, ``test_x0``): they name things.
    """
    out = text.lower()
    for pattern, placeholder in _PLACEHOLDERS:
        out = pattern.sub(placeholder, out)
    return out.strip()


def last_error_line(output: str) -> str:
    """The last line that looks like an error (not a make/pytest banner), else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERRORISH.search(line) and not _SUMMARY_LINE.match(line):
            return line
    return lines[-1] if lines else ""


def signature_of(source: Source, reason: str, failing_tests: Sequence[str] = ()) -> str:
    """What makes two reports the same blocker: the sorted failing test ids of a build when it
    names any, else its normalised last error line; for agents, the whole normalised reason."""
    if source == "build":
        tests = sorted({t.strip() for t in failing_tests if t.strip()})
        return "build: " + (" ".join(tests) if tests else normalise(last_error_line(reason)))
    return f"{source}: {normalise(reason)}"


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why a task's attempt (or the build, ``task_id`` None) cannot go on."""

    task_id: str | None
    agent_id: str
    source: Source
    reason: str
    depth: int = 0
    failing_tests: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        return signature_of(self.source, self.reason, self.failing_tests)

    @property
    def group(self) -> str:
        """What one fixer covers: a timeout or stall is about its own task, nothing shared."""
        if self.source in ("timeout", "stall"):
            return f"{self.task_id} {self.signature}"
        return self.signature

    def summary(self) -> str:
        """One line for messages and prompts: the failing tests or the telling line."""
        if self.failing_tests:
            tests = sorted(set(self.failing_tests))
            more = f" and {len(tests) - 5} more" if len(tests) > 5 else ""
            return "failing " + ", ".join(tests[:5]) + more
        text = (
            last_error_line(self.reason)
            if self.source == "build"
            else " ".join(self.reason.split())
        )
        return text[:300] or "(no reason given)"


# --- the fixer's prompt ---------------------------------------------------------------------

DEFAULT_FIXER_PROMPT = """\
You are a fixer. Agent {agent} (task {task}) is blocked and cannot go on without help.
Blocker: {blocker}

Its progress file is {progress_file}; its last lines were:
{last_lines}

Failing build output:
{build_output}

Already tried (do not repeat it):
{tried}

Remove this blocker in the workspace with the smallest change that works; do not do the task
itself. Say what you changed. If you cannot remove it, block with the reason instead of guessing.
"""
_FIELD = re.compile(r"\{(agent|task|blocker|progress_file|last_lines|build_output|tried)\}")


def fixer_prompt(
    template: str,
    *,
    blocker: Blocker,
    progress_path: str,
    last_lines: Sequence[str],
    build_output: str,
    tried: Sequence[str],
) -> str:
    """Fill ``template`` (the default when blank) in one pass, so filled-in text is never
    re-expanded and other braces survive. A template without any field gets the default appended:
    a fixer that is not told the blocker can only guess."""
    values = {
        "agent": blocker.agent_id,
        "task": blocker.task_id or "(the build)",
        "blocker": blocker.summary() if blocker.source == "build" else blocker.reason.strip(),
        "progress_file": progress_path,
        "last_lines": "\n".join(last_lines) or "(none)",
        "build_output": build_output.strip() or "(none)",
        "tried": "\n".join(f"- {line}" for line in tried) or "(nothing yet)",
    }
    if not template.strip():
        template = DEFAULT_FIXER_PROMPT
    elif not _FIELD.search(template):
        template = template.rstrip() + "\n\n" + DEFAULT_FIXER_PROMPT
    return _FIELD.sub(lambda m: values[m.group(1)], template)
