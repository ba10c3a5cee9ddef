"""What an agent does with git in its checkout: commits, branch switches, rewritten history."""

from __future__ import annotations

from pathlib import Path

import pytest
from isohelp import git, make_repo, plan_file, run, shell

ID = "git -c user.name=agent -c user.email=agent@example.com"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("does not commit", "echo new > new.txt"),
        ("commits", f"echo new > new.txt && git add new.txt && {ID} commit -qm mine"),
        ("switches branch", f"git switch -q -c elsewhere && echo new > new.txt && "
                            f"git add -A && {ID} commit -qm mine"),
        ("detaches HEAD", "git checkout -q --detach && echo new > new.txt"),
        ("rewrites history below its base", f"git reset -q --hard HEAD~1 && echo new > new.txt "
                                            f"&& git add -A && {ID} commit -qm rewritten"),
    ],
)  # fmt: skip
async def test_whatever_the_agent_does_with_git_its_change_lands_on_the_base(
    tmp_path: Path, name: str, command: str
) -> None:
    repo = make_repo(tmp_path / "repo", {"one.txt": "1\n"})
    (repo / "two.txt").write_text("2\n")
    git(repo, "add", "two.txt")
    git(repo, "commit", "-qm", "second")
    plan = plan_file(tmp_path, repo, [shell("t", command)])
    code, journal = await run(plan, tmp_path / "responses")
    assert code == 0, journal.agents["t"].get("reason")
    branch = f"orchestrator/{journal.run['run_id']}"
    files = set(git(repo, "ls-tree", "--name-only", branch).split())
    assert files == {"one.txt", "two.txt", "new.txt"}, f"an agent that {name}"
    assert git(repo, "rev-parse", f"{branch}~1").strip() == git(repo, "rev-parse", "main").strip()
