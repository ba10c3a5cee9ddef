"""The model's patterns, compiled for RE2: ``search`` regexes and ``list_files`` globs.

A model's pattern is input whose cost we cannot predict with a backtracking engine:
``(a+)+$`` over 40 ``a`` and a ``!``, or ``**/`` fourteen times, runs for hours in Python's
``re`` and holds the GIL the whole time, freezing the event loop. RE2 matches in time linear
in the input whatever the pattern, and bounds the memory a pattern may compile to; so every
pattern a model gives is compiled here, for RE2, and nowhere else.

RE2 speaks Python's syntax minus backreferences and look-around; those are refused with a
message that says so. Its errors arrive as bytes from C++ and are turned into text here.
"""

from __future__ import annotations

from typing import Any

import re2

from orchestrator.tools.workspace import ToolError

MAX_PATTERN_CHARS = 4096
"""Longer patterns are refused: nothing a model needs, and compile time grows with length."""
MAX_MEM = 8 << 20
"""Memory RE2 may use for one compiled pattern (its default; bigger patterns are refused)."""


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False  # else RE2 writes every refused pattern to our stderr
    return options


def _reason(error: Exception) -> str:
    text = error.args[0] if error.args else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)


def compile_regex(regex: str) -> Any:
    """A model's regular expression for RE2, or `ToolError` saying why it cannot be one."""
    if not isinstance(regex, str) or not regex or "\x00" in regex:
        raise ToolError("the regular expression is empty")
    if len(regex) > MAX_PATTERN_CHARS:
        raise ToolError(f"the regular expression is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(regex, _options())
    except re2.error as e:
        raise ToolError(
            f"invalid regular expression {regex!r}: {_reason(e)} (RE2 syntax: Python's, "
            "without backreferences or look-around)"
        ) from None


def compile_glob(pattern: str) -> Any:
    """A glob over ``/``-separated relative paths (``*``, ``?``, ``[...]``, ``**``) for RE2."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ToolError(f"the glob pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(glob_to_regex(pattern), _options())
    except re2.error as e:
        raise ToolError(f"invalid glob pattern {pattern!r}: {_reason(e)}") from None


def glob_to_regex(pattern: str) -> str:
    """The RE2 text of a glob: the whole path must match (``\\z``, ``.`` matches newlines)."""
    out: list[str] = ["(?s)"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
        else:
            out.append(re2.escape(pattern[i]))
            i += 1
    return "".join(out) + r"\z"
