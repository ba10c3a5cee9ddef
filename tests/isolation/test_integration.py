"""Each writing agent in its own checkout; their work integrated in dependency order."""

from __future__ import annotations

from pathlib import Path

import pytest
from isohelp import git, make_repo, plan_file, run, shell, task, write


async def test_parallel_writers_of_different_files_both_land_and_the_dependent_sees_both(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "base.txt").write_text("base\n")
    plan = plan_file(tmp_path, ws, [
        task("a", write("a.txt", "from a\n")),
        task("b", write("b.txt", "from b\n")),
        shell("c", "cat a.txt b.txt > c.txt; pwd > where.txt", deps=("a", "b")),
    ])  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0
    assert (ws / "c.txt").read_text() == "from a\nfrom b\n", "c started from a tree with both"
    assert not (ws / ".git").exists(), "a folder that is not a repository never gets a .git"
    where = Path((ws / "where.txt").read_text().strip())
    assert ws not in (where, *where.parents), "the agent ran in a checkout of its own"
    bases = {a: journal.agents[a]["base"] for a in ("a", "b", "c")}
    assert bases["a"] == bases["b"] == journal.run["base"]
    assert bases["c"] != journal.run["base"], "c's base is the integrated work of a and b"
    orders = sorted((journal.tasks[t]["landed_order"], t) for t in ("a", "b", "c"))
    assert [t for _, t in orders][-1] == "c"
    progress = (tmp_path / "responses" / "c.md").read_text()
    assert "changed: c.txt +2 -0" in progress
    assert "landed: " in progress
    assert "## Changes" in (tmp_path / "responses" / "REPORT.md").read_text()


async def test_a_dependent_reads_what_its_dependency_wrote(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    plan = plan_file(tmp_path, ws, [
        task("model", write("model.py", "X = 41\n")),
        shell("api", "test -f model.py && sed 's/41/42/' model.py > api.py", deps=("model",)),
    ])  # fmt: skip
    code, _ = await run(plan, tmp_path / "responses")
    assert code == 0
    assert (ws / "api.py").read_text() == "X = 42\n"


async def test_a_git_workspace_gets_a_branch_with_one_commit_per_task_and_is_left_alone(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "print('hi')\n"})
    before = git(repo, "status", "--porcelain=v2", "--branch")
    plan = plan_file(tmp_path, repo, [
        task("a", write("a.py", "A = 1\n"), prompt="Add module a"),
        shell("b", "git add -A >/dev/null; echo B = 2 > b.py && git add b.py && "
                   "git -c user.name=x -c user.email=x@y commit -qm 'agent commit'"),
    ])  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0
    assert git(repo, "status", "--porcelain=v2", "--branch") == before
    assert not (repo / "a.py").exists(), "delivery is a branch: the checkout is untouched"
    branch = f"orchestrator/{journal.run['run_id']}"
    log = git(
        repo, "log", "--format=%s%n%(trailers:key=Orchestrator-Task,valueonly)", f"main..{branch}"
    )
    subjects = [line for line in log.splitlines() if line]
    assert sorted(zip(subjects[0::2], subjects[1::2], strict=True)) == [
        ("a: Add module a", "a"),
        ("b: b", "b"),
    ], "one commit per task, its id in a trailer (the agent's own commit is squashed)"
    assert git(repo, "rev-list", "--count", f"main..{branch}").strip() == "2"
    git(repo, "merge", "-q", "--ff-only", branch)
    assert (repo / "a.py").read_text() == "A = 1\n"
    assert (repo / "b.py").read_text() == "B = 2\n"


async def test_a_folder_its_enclosing_repository_ignores_gets_the_work_applied(
    tmp_path: Path,
) -> None:
    # The README's demo: demo-workspace/ sits in the project's checkout, which ignores it.
    repo = make_repo(tmp_path / "repo", {".gitignore": "demo-workspace/\n", "app.py": "x\n"})
    ws = repo / "demo-workspace"
    ws.mkdir()
    (ws / "old.txt").write_text("old\n")
    before = git(repo, "status", "--porcelain=v2", "--branch")
    plan = plan_file(tmp_path, ws, [
        task("a", write("pkg/a.py", "A = 1\n")),
        shell("b", "cat pkg/a.py > b.txt", deps=("a",)),
    ])  # fmt: skip
    code, _ = await run(plan, tmp_path / "responses")
    assert code == 0
    assert (ws / "pkg" / "a.py").read_text() == "A = 1\n", "delivered into the folder itself"
    assert (ws / "b.txt").read_text() == "A = 1\n"
    assert (ws / "old.txt").read_text() == "old\n"
    assert not (ws / ".git").exists()
    assert not (repo / "pkg").exists()
    assert not (repo / "b.txt").exists()
    assert git(repo, "status", "--porcelain=v2", "--branch") == before


async def test_a_folder_too_big_to_shadow_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.errors import EnvironmentProblem
    from orchestrator.isolation import repo

    monkeypatch.setattr(repo, "MAX_SHADOW_FILES", 5)
    ws = tmp_path / "ws"
    ws.mkdir()
    for n in range(6):
        (ws / f"f{n}.txt").write_text("x\n")
    (ws / "node_modules").mkdir()
    (ws / "node_modules" / "dep.js").write_text("excluded by default\n")
    plan = plan_file(tmp_path, ws, [task("a", write("a.txt", "a\n"))])
    with pytest.raises(EnvironmentProblem, match="6 files"):
        await run(plan, tmp_path / "responses")
    assert not (ws / "a.txt").exists()
