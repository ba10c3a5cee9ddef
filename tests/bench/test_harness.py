"""The benchmark's harness runs the orchestrator as the CLI would: a refactor of the run's
seams that breaks it shows here, not only in CI's last step (``python -m bench --quick``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.workloads import cleanup, independent, run_orchestrator, sleep_tasks, wide_limits

pytestmark = pytest.mark.timeout(60)


async def test_run_orchestrator_runs_a_small_plan_to_the_end(tmp_path: Path) -> None:
    work = independent(5, seed=1, scale=0.001)
    out = await run_orchestrator(sleep_tasks(work), tmp=tmp_path, limits=wide_limits(5))
    assert sorted(out.run.tasks) == sorted(t.id for t in sleep_tasks(work))
    assert {r.state for r in out.run.tasks.values()} == {"succeeded"}
    assert out.journal_records > 0
    cleanup(out.responses)
