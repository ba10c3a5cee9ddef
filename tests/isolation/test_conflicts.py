"""Two tasks that change the same lines: one fixer in the task's own checkout, or a person."""

from __future__ import annotations

from pathlib import Path

from isohelp import git, plan_file, run, task, write

FIXER = {
    "agent": "scripted",
    "script": [{"say": "keeping both intents"}, write("app.py", "A\nB\n")],
}


def writers(tmp_path: Path, **top: object) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "app.py").write_text("start\n")
    plan = plan_file(tmp_path, ws, [
        task("a", write("app.py", "A\n"), prompt="Make app.py print A"),
        task("b", {"sleep": 0.3}, write("app.py", "B\n"), prompt="Make app.py print B"),
    ], **top)  # fmt: skip
    return ws, plan


async def test_a_conflict_gets_one_fixer_in_the_tasks_checkout_and_then_lands(
    tmp_path: Path,
) -> None:
    ws, plan = writers(tmp_path, fixer=FIXER)
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0, journal.tasks
    assert (ws / "app.py").read_text() == "A\nB\n"
    fixers = [a for a in journal.agents.values() if a.get("role") == "fixer"]
    assert len(fixers) == 1
    assert fixers[0]["checkout"] == journal.agents["b"]["checkout"], "in b's own checkout"
    prompt = (tmp_path / "responses" / f"{fixers[0]['id']}.md").read_text()
    assert "merge conflict landing b: app.py" in prompt
    assert "Make app.py print A" in prompt, "the intent of what landed first"
    assert "Make app.py print B" in prompt, "and of this task"
    assert journal.tasks["b"]["landed"], "b's work landed through its fixer"
    assert journal.tasks["b"]["state"] == "succeeded"


async def test_a_conflict_nobody_can_fix_escalates_and_keeps_the_checkout(
    tmp_path: Path,
) -> None:
    ws, plan = writers(tmp_path)
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 1
    assert journal.tasks["a"]["state"] == "succeeded"
    assert journal.tasks["b"]["state"] == "escalated"
    kept = Path(journal.agents["b"]["checkout"])
    text = (kept / "app.py").read_text()
    assert "<<<<<<<" in text, "the conflicted checkout is kept as it is"
    assert (ws / "app.py").read_text() == "A\n", "what landed was delivered"
    report = (tmp_path / "responses" / "REPORT.md").read_text()
    assert f"cd {kept}" in report
    assert "--resume" in report


async def test_a_conflict_only_in_a_lockfile_is_resolved_mechanically(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "uv.lock").write_text("version = 1\n")
    plan = plan_file(tmp_path, ws, [
        task("a", write("uv.lock", "version = 1\na = 1\n"), write("a.txt", "a\n")),
        task("b", {"sleep": 0.3}, write("uv.lock", "version = 1\nb = 1\n"), write("b.txt", "b\n")),
    ])  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0
    assert (ws / "a.txt").exists()
    assert (ws / "b.txt").exists(), "b's own work landed"
    second = max(("a", "b"), key=lambda t: journal.tasks[t]["landed_order"])
    assert journal.tasks[second]["resolved"] == ["uv.lock"]
    first = "b" if second == "a" else "a"
    assert (ws / "uv.lock").read_text() == f"version = 1\n{first} = 1\n", "the integrated one"


async def test_a_failed_fixers_edits_are_not_landed_on_resume_as_a_persons(
    tmp_path: Path,
) -> None:
    half = {"agent": "scripted", "script": [write("app.py", "A\nB\n"), {"fail": "gave up"}]}
    ws, plan = writers(tmp_path, fixer=half)
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 1
    assert journal.tasks["b"]["state"] == "escalated"
    kept = Path(journal.agents["b"]["checkout"])
    assert (kept / "app.py").read_text() == "A\nB\n", "the fixer's edits are kept as they are"

    code, journal = await run(plan, tmp_path / "responses", resume=True)
    assert code == 1, "nobody resolved anything: nothing lands"
    assert journal.tasks["b"]["state"] == "escalated"
    assert "nothing was changed in the kept checkout" in journal.tasks["b"]["reason"]
    assert not journal.tasks["b"].get("landed")
    fixers = [a for a in journal.agents.values() if a.get("role") == "fixer"]
    assert len(fixers) == 1, "no second fixer ran over the kept checkout"

    git_env = ("-c", "user.name=P", "-c", "user.email=p@example.com")
    git(kept, "add", "-A")
    git(kept, *git_env, "commit", "-qm", "reviewed")
    code, journal = await run(plan, tmp_path / "responses", resume=True)
    assert code == 0, journal.tasks
    assert journal.tasks["b"]["landed_by"] == "person"
    assert (ws / "app.py").read_text() == "A\nB\n"


async def test_a_task_changed_in_the_plan_runs_again_instead_of_waiting_for_a_person(
    tmp_path: Path,
) -> None:
    ws, plan = writers(tmp_path)
    code, journal = await run(plan, tmp_path / "responses")
    assert journal.tasks["b"]["state"] == "escalated"
    kept = Path(journal.agents["b"]["checkout"])
    plan = plan_file(tmp_path, ws, [
        task("a", write("app.py", "A\n"), prompt="Make app.py print A"),
        task("b", {"fail": "changed my mind"}, prompt="Make app.py print B"),
    ])  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses", resume=True)
    assert code == 1
    assert journal.tasks["b"]["state"] == "failed", "its agent ran again: the plan changed it"
    assert journal.agents["b+2"]["branch"], "in a checkout"
    assert "landed_by" not in journal.tasks["b"]
    listing = git(kept, "worktree", "list", "--porcelain").split("\n\n")
    old = next(block for block in listing if block.startswith(f"worktree {kept}\n"))
    assert "kept: " not in old, "the old kept checkout is no longer held for a person"
