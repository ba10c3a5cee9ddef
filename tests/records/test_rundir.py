"""A tampered run directory and a wrong ``--responses``: a clear error naming the file, at once.

Each entry of ``.run/`` (lock, journal, control socket) is swapped for a symbolic link, a
directory, a FIFO or a file of another user, and every command that opens it must answer with
exit 3 and one line naming it: no traceback, no hang (each command is bounded by a timeout).
``--responses`` must be a directory of the run's own: never a link (refused before anything is
created in its target), the workspace or a directory above it, or a directory of the user's
files; an empty value is a usage error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Done, Fleet, task

from orchestrator.records.responses import check_responses
from orchestrator.records.rundir import RunDir

NOBODY = 65534


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def finished_run(fleet: Fleet) -> RunDir:
    fleet.plan(task("a"), task("b", deps=("a",)))
    done = fleet.cli("run", "plan.yaml", "--no-live")
    assert done.code == 0, done.text
    return RunDir(fleet.responses)


def swap(path: Path, how: str, outside: Path) -> None:
    """Put ``how`` in place of ``path``: a link, a directory, a FIFO, or another user's file."""
    if path.exists() or path.is_symlink():
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif how != "foreign":
            path.unlink()
    if how == "link":
        outside.write_text("")
        path.symlink_to(outside)
    elif how == "directory":
        path.mkdir()
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "foreign":
        if not path.exists():
            path.write_text("")
        os.chown(path, NOBODY, NOBODY)


def clear(path: Path) -> None:
    """Take a swapped entry away again (the fleet reads the journal when it closes)."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()


def assert_refused(done: Done, name: str) -> None:
    assert done.code == 3, done.text
    assert "Traceback" not in done.text
    [line] = done.err.strip().split("\n")
    assert line.startswith("error: ")
    assert name in line


ENTRIES = ["lock", "journal.jsonl"]
HOW = ["link", "directory", "fifo", "foreign"]
COMMANDS: dict[str, tuple[str, ...]] = {
    "run": ("run", "plan.yaml", "--no-live"),
    "resume": ("run", "plan.yaml", "--no-live", "--resume"),
    "status": ("status",),
    "watch": ("watch",),
    "wait": ("wait", "a"),
    "cancel": ("cancel", "a"),
}


DEFAULT_CASES = {("journal.jsonl", "fifo"), ("journal.jsonl", "foreign"), ("lock", "link"),
                 ("lock", "directory")}  # fmt: skip
"""The rest of the matrix runs with the slow tests: each case starts six commands."""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("entry", "how"),
    [
        pytest.param(e, h, marks=() if (e, h) in DEFAULT_CASES else pytest.mark.slow)
        for e in ENTRIES
        for h in HOW
    ],
)
def test_a_tampered_run_file_is_a_clear_error_for_every_command(
    fleet: Fleet, tmp_path: Path, entry: str, how: str
) -> None:
    if how == "foreign" and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    rundir = finished_run(fleet)
    fleet.journal()  # the fleet knows the run id before the journal is swapped away
    swap(rundir.run / entry, how, tmp_path / "outside")
    shown = str(rundir.run / entry).replace(f"{fleet.cwd}/", "")
    try:
        for name, args in COMMANDS.items():
            if name == "wait" and entry == "lock":
                continue  # the journal already says how `a` ended: wait never opens the lock
            done = fleet.cli(*args, timeout=20)
            assert done.code == 3, (name, done.text)
            assert_refused(done, shown)
    finally:
        clear(rundir.run / entry)
    if how == "link":
        assert (tmp_path / "outside").read_text() == ""  # nothing was written through it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["link", "directory", "file", "foreign"])
def test_anything_but_our_socket_in_place_of_the_control_socket_is_refused(
    fleet: Fleet, tmp_path: Path, how: str
) -> None:
    if how == "foreign" and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    rundir = finished_run(fleet)
    path = rundir.socket
    with socket.socket(socket.AF_UNIX) as other:
        if how == "link":
            other.bind(str(tmp_path / "other.sock"))
            path.symlink_to(tmp_path / "other.sock")
        elif how == "directory":
            path.mkdir()
        elif how == "file":
            path.write_text("")
        else:
            other.bind(str(path))
            os.chown(path, NOBODY, NOBODY)
        done = fleet.cli("run", "plan.yaml", "--no-live", timeout=20)
        assert_refused(done, "control.sock")
        for command in (("cancel", "a"), ("cancel", "--all")):
            assert fleet.cli(*command, timeout=20).code == 3, command
    if how == "link":
        assert (tmp_path / "other.sock").exists()  # not unlinked, not connected to


def test_a_symlinked_run_directory_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    fleet.plan(task("a"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fleet.responses.mkdir()
    (fleet.responses / ".run").symlink_to(elsewhere)
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=20)
    assert_refused(done, ".run")
    assert list(elsewhere.iterdir()) == []


# --- --responses ---------------------------------------------------------------------------


def test_a_symlinked_responses_is_refused_before_anything_is_created_in_its_target(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.plan(task("a"))
    target = tmp_path / "target"
    target.mkdir()
    (fleet.cwd / "link").symlink_to(target)
    done = fleet.cli("run", "plan.yaml", "--no-live", "--responses", "link", timeout=20)
    assert_refused(done, "link")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("command", [("run", "plan.yaml"), ("status",), ("tail", "a")])
def test_an_empty_responses_is_a_usage_error(fleet: Fleet, command: tuple[str, ...]) -> None:
    fleet.plan(task("a"))
    done = fleet.cli(*command, "--responses", "", timeout=20)
    assert done.code == 2, done.text
    assert "--responses" in done.err
    assert not fleet.responses.exists()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("ws", "is the workspace"),
        (".", "above the workspace"),
        ("mine", "holds files its journal does not name"),
    ],
)
def test_responses_that_would_mix_with_the_users_files_are_refused(
    fleet: Fleet, where: str, why: str
) -> None:
    fleet.plan(task("README"), task("notes"))
    fleet.workspace.mkdir()
    readme = fleet.cwd / "README.md"
    readme.write_text("the user's own words\n")
    (fleet.cwd / "mine").mkdir()
    (fleet.cwd / "mine" / "notes.md").write_text("mine too\n")
    done = fleet.cli("run", "plan.yaml", "--no-live", "--responses", where, timeout=20)
    assert_refused(done, "--responses")
    assert why in done.err
    assert readme.read_text() == "the user's own words\n"
    assert (fleet.cwd / "mine" / "notes.md").read_text() == "mine too\n"
    assert not (fleet.cwd / where / ".run").exists()


def test_a_previous_runs_files_and_hidden_ones_are_fine_but_an_added_file_is_not(
    fleet: Fleet,
) -> None:
    rundir = finished_run(fleet)
    (fleet.responses / ".gitkeep").write_text("")

    def again() -> Done:
        return fleet.cli("run", "plan.yaml", "--no-live", timeout=30)

    assert again().code == 0
    assert fleet.cli("run", "plan.yaml", "--no-live", "--resume", timeout=30).code == 0
    (fleet.responses / "b.md").unlink()
    (fleet.responses / "b.md").symlink_to(rundir.journal)  # ours by name, not by kind
    (fleet.responses / "todo.txt").write_text("")
    done = again()
    assert_refused(done, "b.md, todo.txt")


def test_check_responses_accepts_a_new_directory_beside_or_inside_the_workspace(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    check_responses(tmp_path / "agent-responses", ws)
    check_responses(ws / "agent-responses", ws)
