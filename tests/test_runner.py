"""The composition root of `run`: what it promises at the end of every run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import poll
from conftest import processes_with_marker

from orchestrator.plan.load import load_plan
from orchestrator.process import orphans
from orchestrator.records.journal import load
from orchestrator.runner import RunOptions, run_plan


def test_stop_run_kills_what_is_left_of_a_run_and_names_no_survivor(tmp_path: Path) -> None:
    env = {"ORCHESTRATOR_RUN_ID": "test-stop-run-" + tmp_path.name, "PATH": "/usr/bin:/bin"}
    stubborn = "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 30\" & sleep 30"
    proc = subprocess.Popen(["sh", "-c", stubborn], env=env, start_new_session=True)
    try:
        run_id = env["ORCHESTRATOR_RUN_ID"]
        poll(lambda: len(processes_with_marker(run_id)) >= 4, what="the shells and their sleeps")
        assert orphans.stop_run(run_id) == []
        assert processes_with_marker(run_id) == []
    finally:
        proc.kill()
        proc.wait()


async def test_a_run_that_cannot_stop_a_process_names_it_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A process that SIGKILL cannot end (stuck in the kernel) cannot be made on demand, so the
    # sweep's answer is substituted: the real sweep runs, then names one process as a survivor.
    survivor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    real = orphans.stop_run

    def stuck(run_id: str) -> list[int]:
        return [*real(run_id), survivor.pid]

    monkeypatch.setattr(orphans, "stop_run", stuck)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "name: stuck\nworkspace: ws\ntasks:\n  - {id: a, agent: scripted, script: [{say: hi}]}\n"
    )
    (tmp_path / "ws").mkdir()
    responses = tmp_path / "agent-responses"
    try:
        code = await run_plan(load_plan(plan_file), RunOptions(responses=responses, json=True))
    finally:
        survivor.kill()
        await survivor.wait()
    assert code == 1, "every task succeeded, but a process of the run survived"
    err = capsys.readouterr().err
    assert f"could not stop 1 process(es) of the run, even with SIGKILL: pids {survivor.pid}" in err
    assert load(responses / ".run" / "journal.jsonl").run["survivors"] == [survivor.pid]
    report = (responses / "REPORT.md").read_text()
    assert f"- could not stop, even with SIGKILL: pids {survivor.pid}" in report
