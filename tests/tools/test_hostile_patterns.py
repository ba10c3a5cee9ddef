"""Patterns a model may send that would stall a backtracking engine: linear time, loop alive.

``(a+)+$`` over forty ``a`` and a ``!`` takes Python's ``re`` about 2**40 steps, with the GIL
held the whole time: the event loop, the control socket and signal handling all stop. With
RE2 the same call answers at once, and a ticker on the loop measures how late it ever woke.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orchestrator.tools.calls import dispatch
from orchestrator.tools.files import list_files, search
from orchestrator.tools.patterns import compile_glob, compile_regex
from orchestrator.tools.workspace import ToolError, Workspace

CATASTROPHIC_REGEX = "(a+)+$"
CATASTROPHIC_GLOB = "**/" * 14 + "x"
LAG_BOUND = 0.5
"""Generous on purpose (2 shared cores, other tests running): the failure it guards against
is a loop frozen for minutes, not a few milliseconds of jitter."""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    deep = root.joinpath(*(f"d{i}" for i in range(20)))
    deep.mkdir(parents=True)
    (root / "evil.txt").write_text("a" * 40 + "!\n")
    (deep / "evil.txt").write_text(("a" * 40 + "!\n") * 200)
    return Workspace(root)


async def _max_lag_while(work: asyncio.Future[object] | asyncio.Task[object]) -> float:
    """How late a 10 ms ticker on the loop ever woke while ``work`` ran."""
    worst = 0.0
    while not work.done():
        before = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - before - 0.01)
    return worst


@pytest.mark.timeout(60)
async def test_a_catastrophic_regex_and_glob_answer_while_the_loop_keeps_ticking(
    ws: Workspace,
) -> None:
    calls = [
        ("search", {"regex": CATASTROPHIC_REGEX}),
        ("search", {"regex": CATASTROPHIC_REGEX, "glob": CATASTROPHIC_GLOB}),
        ("list_files", {"pattern": CATASTROPHIC_GLOB}),
    ]
    for name, args in calls:
        work = asyncio.ensure_future(dispatch(ws, name, args, env={}, timeout=5.0))
        lag = await _max_lag_while(work)
        outcome = work.result()
        assert not outcome.is_error, outcome.text
        assert outcome.text.startswith(("no matches", "no files match")), outcome.text
        assert lag < LAG_BOUND, f"{name} {args}: the loop stalled {lag:.3f}s"


def test_matching_is_linear_in_the_line_whatever_the_regex(ws: Workspace) -> None:
    regex = compile_regex(CATASTROPHIC_REGEX)
    assert regex.search("a" * 40 + "!") is None
    assert regex.search("a" * 200_000 + "!") is None  # would never end with backtracking
    assert compile_glob(CATASTROPHIC_GLOB).match("d/" * 5_000 + "y") is None


@pytest.mark.parametrize(
    ("regex", "why"),
    [
        (r"(a)\1", "backreferences"),
        ("(?=a)b", "look-around"),
        ("(", "missing"),
        ("", "empty"),
        ("a" * 5000, "longer than"),
    ],
)
def test_regexes_re2_cannot_run_are_refused_with_a_reason(
    ws: Workspace, regex: str, why: str
) -> None:
    with pytest.raises(ToolError, match=why):
        search(ws, regex)


def test_a_walk_that_runs_out_of_time_answers_with_what_it_found_and_says_so(
    ws: Workspace,
) -> None:
    text = search(ws, "a+!", seconds=0)
    assert text.endswith("[stopped after 0 s; not every file was searched; narrow the glob]")
    listed = list_files(ws, "**/*", seconds=0)
    assert listed.endswith("[stopped after 0 s; the list is incomplete; narrow the pattern]")


def test_a_glob_with_a_broken_class_is_a_tool_error_not_a_crash(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="invalid glob pattern"):
        list_files(ws, "[z-a]*")
