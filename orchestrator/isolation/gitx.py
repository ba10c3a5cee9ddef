"""Running git for the orchestrator: plumbing with hooks off, no prompts, stable output.

A `Git` is bound to one repository (its git directory, and the work tree of the checkout a
command is about). Nothing here touches the user's config: settings travel on the command
line (``-c``) or in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import RunError
from orchestrator.process.capture import Captured, run_captured

IDENTITY = ("orchestrator", "orchestrator@localhost")
"""Who commits when the user's git has no identity (``user.name`` / ``user.email``)."""


class GitFailed(RunError):
    """A git command the orchestrator ran failed; ``result`` has what it printed."""

    def __init__(self, result: Captured) -> None:
        cmd = " ".join(result.argv[1:6])
        super().__init__(f"git {cmd} failed ({result.returncode}): {result.err[-500:]}")
        self.result = result


def base_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for git: no prompts, no pager, C locale, no inherited repository."""
    env = {
        k: v for k, v in (os.environ if source is None else source).items()
        if not k.startswith("GIT_") or k in ("GIT_EXEC_PATH",)
    }  # fmt: skip
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", GIT_OPTIONAL_LOCKS="0")
    return env


@dataclass
class Git:
    """git bound to ``git_dir`` (and, for commands about files, a work tree)."""

    git_dir: Path
    env: dict[str, str] = field(default_factory=base_env)
    timeout: float = 600.0
    _ident: dict[str, str] | None = field(default=None, repr=False)

    async def run(
        self,
        *args: str,
        at: Path | None = None,
        work_tree: Path | None = None,
        stdin: bytes | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Captured:
        """``git ARGS`` in the repository, or ``at`` a checkout of it (its own index and HEAD),
        or with an explicit ``work_tree`` (a shadow repository's folder)."""
        argv = ["git", "-c", "core.hooksPath=/dev/null"]
        if at is not None:
            argv += ["-C", str(at)]
        else:
            argv += ["--git-dir", str(self.git_dir)]
        if work_tree is not None:
            argv += ["--work-tree", str(work_tree)]
        argv += args
        full = self.env if env is None else {**self.env, **env}
        cwd = at or work_tree or self.git_dir
        result = await run_captured(argv, cwd=cwd, env=full, stdin=stdin, limit=self.timeout)
        if check and result.returncode != 0:
            raise GitFailed(result)
        return result

    async def out(
        self,
        *args: str,
        at: Path | None = None,
        work_tree: Path | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        result = await self.run(*args, at=at, work_tree=work_tree, stdin=stdin, env=env)
        return result.out.strip()

    async def rev(self, ref: str) -> str | None:
        """The commit ``ref`` names, or None."""
        result = await self.run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
        return result.out.strip() or None if result.returncode == 0 else None

    async def identity(self) -> dict[str, str]:
        """Author and committer for commits the orchestrator makes: the user's, else ours."""
        if self._ident is not None:
            return self._ident
        name = (await self.run("config", "user.name", check=False)).out.strip() or IDENTITY[0]
        mail = (await self.run("config", "user.email", check=False)).out.strip() or IDENTITY[1]
        self._ident = {
            "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": mail,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": mail,
        }  # fmt: skip
        return self._ident

    async def commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        ident = await self.identity()
        return await self.out(*args, stdin=message.encode(), env=ident)
