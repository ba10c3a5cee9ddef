"""Reading what an agent's program says: ``BLOCKED:`` lines and exit codes, for every kind.

One reader for all: a command agent, the ``lines`` presets (codex, aider) and claude-code's
final message take the same line as a blocker, plain (``BLOCKED: reason``) or dressed in
Markdown (``**BLOCKED:** reason``, ``> BLOCKED: reason``); and an exit code means the same
whatever the program was.
"""

from __future__ import annotations

import re
import signal

from orchestrator.events import AgentEvent, Failed, Finished

BLOCKED_START = re.compile(r"^[ \t>*_`]*BLOCKED[*_`]*:", re.MULTILINE)
"""Where a line reports a blocker: ``BLOCKED: reason``, also as ``**BLOCKED:** reason``.

Only the start is a regex; the reason is cut from the rest of its line with `str.strip`, so
the time it takes is linear in the line whatever an agent prints (a lazy group followed by a
class, as in ``(.*?)[ *]*$``, is quadratic on ``BLOCKED: ***...x``)."""
_MARKUP = "*_`"
NO_REASON = "(no reason given)"
REASON_CHARS = 500
SUMMARY_CHARS = 200


def blocked_reason(text: str) -> str | None:
    """The reason of the first ``BLOCKED:`` line in ``text`` (one line or many), else None."""
    if "BLOCKED" not in text:  # the common case, without the regex
        return None
    match = BLOCKED_START.search(text)
    if match is None:
        return None
    end = text.find("\n", match.end())
    rest = text[match.end() : end if end >= 0 else len(text)]
    reason = rest.lstrip(_MARKUP).lstrip(" \t").rstrip(" \t" + _MARKUP).strip()
    return shorten(reason, REASON_CHARS) or NO_REASON


def outcome(code: int, last_stdout: str = "") -> AgentEvent:
    """The terminal event for a program that exited with ``code`` (negative: a signal).

    126 and 127 (not executable, not found) are configuration errors: never "fixed"."""
    if code == 0:
        return Finished(summary=shorten(last_stdout.strip(), SUMMARY_CHARS))
    if code == 126:
        return Failed("exit code 126: the command is not executable", kind="config")
    if code == 127:
        return Failed("exit code 127: the command was not found", kind="config")
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return Failed(f"killed by signal {-code}{name}")
    return Failed(f"exit code {code}")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
