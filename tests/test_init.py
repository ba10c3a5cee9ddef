"""`orchestrator init` writes a starter plan that runs offline as it is, fixer and build too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_the_starter_plan_runs_offline_and_its_fixer_repairs_the_build(fleet: Fleet) -> None:
    assert fleet.cli("init").code == 0
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=120)
    assert done.code == 0, done.text
    report = (fleet.responses / "REPORT.md").read_text()
    assert "- build check: passed" in report
    assert "+build+fix1" in report
    assert (fleet.cwd / "workspace" / "greet.py").read_text().count("'hello'") == 1
