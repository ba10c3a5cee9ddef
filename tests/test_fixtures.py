"""The suite's own safety net: what a test leaves behind is killed, and only what this suite
started (another suite on the machine, or a user's own run, is not touched)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import leftover_run_processes

from orchestrator.process.procfs import RUN_ID_VAR

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Marked sleepers, each waited for when the test ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.communicate()  # reaped, its pipes closed


def _sleeper(cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    code = "import sys; sys.stdout.write('up\\n'); sys.stdout.flush(); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, env={"PATH": os.defpath, **env},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"up\n"  # its environment is in place
    return proc


def test_only_this_suite_s_leftovers_are_found(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, spawn: list[subprocess.Popen[bytes]]
) -> None:
    ours = tmp_path_factory.getbasetemp().resolve()
    marker = {RUN_ID_VAR: "run-test-fixtures"}
    elsewhere = Path("/")
    spawn.append(working_here := _sleeper(tmp_path, **marker))
    spawn.append(naming_us := _sleeper(elsewhere, **marker, ORCHESTRATOR_QUOTA=f"{tmp_path}/s"))
    spawn.append(someone_else_s := _sleeper(elsewhere, **marker))
    spawn.append(unmarked := _sleeper(tmp_path))
    found = set(leftover_run_processes(ours))
    assert {working_here.pid, naming_us.pid} <= found
    assert someone_else_s.pid not in found, "a run that is not this suite's was taken for one"
    assert unmarked.pid not in found
