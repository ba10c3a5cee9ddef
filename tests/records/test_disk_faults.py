"""A full disk or a file-size limit, before or during a run: a clean end and an honest record.

Mid-run: agents stopped, one line on stderr (exit 1), the journal's last record ``interrupted``
(it keeps space in reserve for that), progress files in whole lines; once there is room again,
``--resume`` finishes the plan. Before the start: exit 3, nothing started. The full disk is a
small tmpfs mounted for the test (root only: skipped elsewhere); the file-size limit is
``RLIMIT_FSIZE``, which works anywhere.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import ORCH, Fleet, quiet_env, task
from hostile import assert_json_lines

from orchestrator.records.journal import load

FLOOD = "import sys\nfor i in range(60000): print('line %d ' % i + 'x' * 60)"
"""About 4 MiB of output: more than the small disk holds, or the file-size limit allows."""


def flood_plan(fleet: Fleet) -> Path:
    return fleet.plan(
        {"id": "flood", "agent": "command", "command": [sys.executable, "-c", FLOOD]},
        task("after", {"say": "after the flood"}, deps=("flood",)),
    )


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(  # noqa: TID251 - a sync test
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # noqa: TID251 - a sync test


def run_with(fleet: Fleet, *args: str, **rlimits: Any) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGS`` in the fleet's directory, with resource limits set in the child."""

    def limit() -> None:
        for name, value in rlimits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    return subprocess.run(  # noqa: TID251 - a sync test
        [*ORCH, *args],
        cwd=fleet.cwd,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit if rlimits else None,
        check=False,
    )


def assert_stopped_cleanly(fleet: Fleet, done: subprocess.CompletedProcess[str], why: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().split("\n")
    assert line.startswith("error: cannot write ")
    assert why in line
    assert "--resume" in line
    journal = load(fleet.responses / ".run" / "journal.jsonl")
    assert journal.torn == 0
    assert journal.run["state"] == "interrupted"
    assert journal.agents["flood"]["state"] == "cancelled"
    assert "after" not in journal.agents  # the dependent never started
    for md in fleet.responses.glob("*.md"):
        # whole lines, or none: the dependent's file is empty when the loop had started it
        # (the flood's end seen before the writer's ENOSPC) and its header found no room;
        # its start was never recorded, so it never acted and `--resume` starts it afresh
        data = md.read_bytes()
        assert not data or data.endswith(b"\n"), f"{md.name} was cut mid-line"
    for sidecar in fleet.responses.glob("*.events.jsonl"):
        assert_json_lines(sidecar)


def assert_resumes_to_the_end(fleet: Fleet) -> None:
    done = run_with(fleet, "run", "plan.yaml", "--no-live", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    journal = load(fleet.responses / ".run" / "journal.jsonl")
    assert journal.run["state"] == "finished"
    assert {t: rec["state"] for t, rec in journal.tasks.items()} == {
        "flood": "succeeded",
        "after": "succeeded",
    }
    assert not [a for a, rec in journal.agents.items() if rec["state"] == "running"]


@pytest.mark.timeout(120)
def test_a_disk_that_fills_mid_run_stops_it_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        fleet = Fleet(disk)
        try:
            flood_plan(fleet)
            done = run_with(fleet, "run", "plan.yaml", "--no-live")
            assert_stopped_cleanly(fleet, done, "No space left on device")
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # noqa: TID251 - a sync test
            assert_resumes_to_the_end(fleet)
        finally:
            fleet.close()


@pytest.mark.timeout(120)
def test_a_file_size_limit_mid_run_stops_it_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        flood_plan(fleet)
        done = run_with(fleet, "run", "plan.yaml", "--no-live", RLIMIT_FSIZE=512 * 1024)
        assert_stopped_cleanly(fleet, done, "File too large")
        assert_resumes_to_the_end(fleet)
    finally:
        fleet.close()


@pytest.mark.timeout(60)
def test_a_full_disk_before_the_start_is_exit_3_and_starts_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fleet = Fleet(disk)
        try:
            flood_plan(fleet)
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 65536)
            os.close(fd)
            done = run_with(fleet, "run", "plan.yaml", "--no-live")
            assert done.returncode == 3, done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            [line] = done.stderr.strip().split("\n")
            assert line.startswith("error: cannot write ")
            assert "No space left on device; nothing was started" in line
            assert not list(fleet.responses.glob("*.md"))
        finally:
            fleet.close()


@pytest.mark.timeout(60)
def test_a_file_size_limit_before_the_start_is_exit_3_and_starts_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        flood_plan(fleet)
        done = run_with(fleet, "run", "plan.yaml", "--no-live", RLIMIT_FSIZE=0)
        assert done.returncode == 3, done.stdout + done.stderr
        [line] = done.stderr.strip().split("\n")
        assert line.startswith("error: cannot write ")
        assert "File too large; nothing was started (hint: a file-size limit" in line
        assert not list(fleet.responses.glob("*.md"))
    finally:
        fleet.close()
