"""`diff`, `status` and `gc` about a run's checkouts, through the real command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, task


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_diff_status_and_gc_show_and_collect_the_checkouts(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"write": {"path": "a.txt", "content": "one\ntwo\n"}}),
        task("b", {"run": "echo b > b.txt"}, deps=("a",)),
        isolation="auto",
    )
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 0, done.text
    assert "delivery: applied" in done.err
    diff = fleet.cli("diff", "a")
    assert diff.code == 0, diff.text
    assert "+one\n+two\n" in diff.out
    assert "b.txt | 1 +" in fleet.cli("diff", "b", "--stat").out, "only what b changed"
    assert fleet.cli("diff", "nobody").code == 2
    status = fleet.cli("status", "--json")
    pool = json.loads(status.out)["pool"]
    assert pool["checkouts"] >= 1
    assert pool["bytes"] > 0
    dry = fleet.cli("gc", "--dry-run")
    assert "would remove: checkout" in dry.out
    assert Path(pool["path"]).exists()
    gone = fleet.cli("gc")
    assert gone.code == 0, gone.text
    assert "removed: branch orchestrator/work/" in gone.out
    assert fleet.cli("gc").out.strip() == "nothing to collect"
