"""A conflict escalated to a person: resolved by hand in the kept checkout, then `--resume`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Fleet, task
from isohelp import git

PERSON = ("-c", "user.name=Person", "-c", "user.email=person@example.com")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def escalated(fleet: Fleet) -> Path:
    """Run a plan whose tasks a and b change the same line (no fixer); b's kept checkout."""
    ran = fleet.cwd / "ran.txt"
    fleet.workspace.mkdir()
    (fleet.workspace / "app.py").write_text("start\n")
    fleet.plan(
        task("a", {"run": f"echo a >> {ran}"}, {"write": {"path": "app.py", "content": "A\n"}},
             prompt="Make app.py print A"),
        task("b", {"sleep": 0.3}, {"run": f"echo b >> {ran}"},
             {"write": {"path": "app.py", "content": "B\n"}}, prompt="Make app.py print B"),
        task("c", {"run": f"echo c >> {ran}; cp app.py c.txt"}, deps=("b",)),
        isolation="auto",
        sandbox="off",  # the agents count their runs in a file outside their checkouts
    )  # fmt: skip
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 1, done.text
    journal = fleet.journal()
    assert journal.tasks["b"]["state"] == "escalated"
    assert journal.tasks["c"]["state"] == "skipped"
    kept = Path(journal.agents["b"]["checkout"])
    assert "<<<<<<<" in (kept / "app.py").read_text()
    report = (fleet.responses / "REPORT.md").read_text()
    escalation = report.split("## Escalations", 1)[1].split("## Agents", 1)[0]
    assert f"By hand: cd {kept}; resolve app.py" in escalation, "the way to finish is quoted"
    assert "git commit" in escalation
    assert "--resume" in escalation
    return kept


def test_a_conflict_resolved_by_hand_lands_on_resume_without_running_an_agent(
    fleet: Fleet,
) -> None:
    kept = escalated(fleet)
    (kept / "app.py").write_text("A\nB\n")
    git(kept, "add", "-A")
    git(kept, *PERSON, "commit", "-qm", "keep both")
    agents_before = set(fleet.journal().agents)

    done = fleet.cli("run", "plan.yaml", "--resume", "--no-live", timeout=60)
    assert done.code == 0, done.text
    journal = fleet.journal()
    assert journal.tasks["b"]["state"] == "succeeded"
    assert journal.tasks["b"]["landed_by"] == "person"
    assert journal.tasks["c"]["state"] == "succeeded", "its dependent ran"
    assert (fleet.cwd / "ran.txt").read_text().split() == ["a", "b", "c"], "nothing re-ran"
    new = set(journal.agents) - agents_before
    b_again = [journal.agents[a] for a in new if journal.agents[a].get("task") == "b"]
    assert len(b_again) == 1
    assert "landed by a person" in b_again[0]["reason"]
    assert not b_again[0].get("pid"), "no process was started for it"
    assert (fleet.workspace / "app.py").read_text() == "A\nB\n", "the resolution, delivered"
    assert (fleet.workspace / "c.txt").read_text() == "A\nB\n", "c started from it"
    report = (fleet.responses / "REPORT.md").read_text()
    assert "landed by a person" in report
    changes = report.split("## Changes", 1)[1].split("##", 1)[0]
    assert f"{b_again[0]['id']} (b): app.py" in changes, "what the person's resolution changed"
    status = json.loads(fleet.cli("status", "--json").out)
    board = {t["id"]: t for t in status["board"]}
    assert "landed by a person" in board["b"]["reason"]
    assert fleet.cli("gc", "--dry-run").code == 0


def test_resume_with_conflict_markers_left_keeps_the_task_escalated_and_runs_nothing(
    fleet: Fleet,
) -> None:
    kept = escalated(fleet)
    text = (kept / "app.py").read_text()
    (kept / "app.py").write_text("# looked at it\n" + text)  # half-done: the markers remain
    done = fleet.cli("run", "plan.yaml", "--resume", "--no-live", timeout=60)
    assert done.code == 1, done.text
    journal = fleet.journal()
    assert journal.tasks["b"]["state"] == "escalated"
    assert "conflict markers are still in app.py" in journal.tasks["b"]["reason"]
    assert journal.tasks["c"]["state"] == "skipped"
    assert (fleet.cwd / "ran.txt").read_text().split() == ["a", "b"], "no agent ran"
    assert (kept / "app.py").read_text().startswith("# looked at it\n<<<<<<<"), "untouched"
    report = (fleet.responses / "REPORT.md").read_text()
    escalation = report.split("## Escalations", 1)[1]
    assert "conflict markers are still in app.py" in escalation
    assert f"By hand: cd {kept}" in escalation

    # finished without committing (the merge left open): the next resume commits and lands it
    (kept / "app.py").write_text("A\nB\n")
    done = fleet.cli("run", "plan.yaml", "--resume", "--no-live", timeout=60)
    assert done.code == 0, done.text
    assert fleet.journal().tasks["b"]["landed_by"] == "person"
    assert (fleet.workspace / "c.txt").read_text() == "A\nB\n"
