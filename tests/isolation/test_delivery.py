"""The user's checkout: never touched by a run, changed by --deliver apply only when safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clirun import tree
from isohelp import git, make_repo, plan_file, run, task, write

from orchestrator.records.journal import load


def user_files(repo: Path) -> dict[str, tuple[int, int]]:
    return {k: v for k, v in tree(repo).items() if not k.startswith(".git")}


def dirty_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n", "lib.py": "lib\n"})
    (repo / "app.py").write_text("v1 with my edit\n")  # unstaged
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "lib.py").write_text("lib staged\n")
    git(repo, "add", "lib.py")  # staged
    return repo


async def test_a_dirty_checkout_is_left_exactly_as_it_was_and_agents_start_from_it(
    tmp_path: Path,
) -> None:
    repo = dirty_repo(tmp_path)
    index = (repo / ".git" / "index").read_bytes()
    files = user_files(repo)
    status = git(repo, "status", "--porcelain=v2")
    plan = plan_file(tmp_path, repo, [
        task("t", write("out.txt", "made\n")),
    ])  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0
    assert user_files(repo) == files, "no file of the user's was written"
    assert (repo / ".git" / "index").read_bytes() == index, "nor the index"
    assert git(repo, "status", "--porcelain=v2") == status
    branch = f"orchestrator/{journal.run['run_id']}"
    assert git(repo, "show", f"{branch}:app.py") == "v1 with my edit\n", "the base is a snapshot"
    assert git(repo, "show", f"{branch}:notes.txt") == "untracked notes\n"


async def test_deliver_apply_adds_the_runs_changes_next_to_the_users_own(
    tmp_path: Path,
) -> None:
    repo = dirty_repo(tmp_path)
    staged = git(repo, "diff", "--cached")
    plan = plan_file(tmp_path, repo, [task("t", write("out.txt", "made\n"))])
    code, _ = await run(plan, tmp_path / "responses", deliver="apply")
    assert code == 0
    assert (repo / "out.txt").read_text() == "made\n"
    assert (repo / "app.py").read_text() == "v1 with my edit\n"
    assert git(repo, "diff", "--cached") == staged, "the user's staged change is as it was"


async def test_deliver_apply_never_overwrites_a_file_the_user_changed_during_the_run(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n"})
    plan = plan_file(tmp_path, repo, [
        task("t", {"sleep": 0.5}, write("app.py", "from the agent\n")),
    ])  # fmt: skip

    async def edit_meanwhile() -> None:
        await asyncio.sleep(0.2)
        (repo / "app.py").write_text("the user's edit\n")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(edit_meanwhile())
        result = tg.create_task(run(plan, tmp_path / "responses", deliver="apply"))
    code, journal = result.result()
    assert code == 0
    assert (repo / "app.py").read_text() == "the user's edit\n"
    assert journal.run["applied"] is False
    assert any("not applied" in line for line in journal.run["delivery_lines"])


async def test_isolation_none_keeps_the_shared_directory_and_warns_when_writers_overlap(
    tmp_path: Path, capsys: object
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    plan = plan_file(tmp_path, ws, [
        task("a", {"sleep": 0.3}, write("a.txt", "a\n")),
        task("b", {"sleep": 0.3}, write("b.txt", "b\n")),
    ], isolation="none")  # fmt: skip
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0
    assert (ws / "a.txt").exists()
    assert (ws / "b.txt").exists()
    assert journal.run["isolation"] == "none"
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "warning: isolation is none" in err


async def test_tasks_that_changed_nothing_deliver_nothing(tmp_path: Path) -> None:
    """Each task lands a commit, files changed or not: the delivery compares trees. A run of
    agents that wrote nothing said "not applied: ... No valid patches in input" and named a
    branch to take."""
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n"})
    (repo / "notes.txt").write_text("the user's own, untracked\n")
    plan = plan_file(tmp_path, repo, [task("a", {"say": "looked"}), task("b", deps=("a",))])
    code, journal = await run(plan, tmp_path / "responses", deliver="apply")
    assert code == 0
    assert [t["state"] for t in journal.tasks.values()] == ["succeeded", "succeeded"]
    assert journal.run["delivery_lines"] == ["delivery: nothing changed"]
    assert (repo / "notes.txt").read_text() == "the user's own, untracked\n"


async def test_an_unreadable_integration_ref_fails_the_attempts_not_the_run(
    tmp_path: Path,
) -> None:
    """Git that cannot read the run's integration ref (deleted here; a git exit code misread
    in a busy run did it) fails the attempts that need it, each with the reason: the run
    ends with exit 1. It crashed with an AssertionError and a traceback."""
    repo = make_repo(tmp_path / "repo", {"app.py": "v1\n"})
    gate = tmp_path / "go"
    plan = plan_file(tmp_path, repo, [
        task("a", {"run": f"while [ ! -e {gate} ]; do sleep 0.02; done"}),
        task("b", deps=("a",)),
    ])  # fmt: skip
    responses = tmp_path / "responses"
    journal = responses / ".run" / "journal.jsonl"

    async def lose_the_ref() -> None:
        while not (journal.exists() and load(journal).run.get("state") == "running"):
            await asyncio.sleep(0.02)
        run_id = load(journal).run["run_id"]
        git(repo, "update-ref", "-d", f"refs/orchestrator/{run_id}/integration")
        gate.touch()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(lose_the_ref())
        result = tg.create_task(run(plan, responses))
    code, state = result.result()
    assert code == 1
    assert f"refs/orchestrator/{state.run['run_id']}/integration" in state.agents["a"]["reason"]
    assert state.tasks["b"]["state"] == "skipped"
    assert state.run["delivery_lines"] == [
        f"delivery: none: git cannot read the run's integration ref "
        f"refs/orchestrator/{state.run['run_id']}/integration"
    ]
