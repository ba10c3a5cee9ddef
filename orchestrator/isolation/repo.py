"""Which repository a workspace is: the git repository it sits in, or a shadow one.

A workspace the enclosing repository ignores (``demo-workspace/`` in a ``.gitignore``) is
treated as a plain folder: the repository would not see the agents' work.

A folder that is not in a git repository gets a *shadow* repository in the state directory,
keyed by the folder's absolute path (``--git-dir`` there, ``--work-tree`` the folder), so the
folder never gets a ``.git``. Its excludes start from `DEFAULT_EXCLUDES`; a size guard
(`check_folder_size`, run before a run has any side effect) refuses a folder too big to copy
per agent.

The run's base is the user's checkout as it is when the run starts: ``HEAD`` when it is
clean, else a snapshot commit made through a temporary index, so the user's index, HEAD and
files are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import EnvironmentProblem
from orchestrator.isolation.gitx import Git, base_env

DEFAULT_EXCLUDES = (
    ".git/", "node_modules/", ".venv/", "venv/", "__pycache__/", "*.pyc", "dist/", "build/",
    "target/", ".DS_Store", ".env", ".env.*", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/",
)  # fmt: skip
MAX_SHADOW_FILES = 200_000
MAX_SHADOW_BYTES = 5 * 1024**3


def state_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "orchestrator"


def cache_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator"


def slug_of(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name)[:40] or "root"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Repo:
    """A repository the run's checkouts come from."""

    git: Git
    top: Path
    """The user's folder: the repository's work tree, or the shadowed folder."""
    prefix: str
    """The workspace inside ``top`` ("" when they are the same)."""
    shadow: bool
    state: Path
    """Our bookkeeping for this repository (locks, the shadow's index); never in a checkout."""
    pool_root: Path
    """Where the pool's checkouts live, outside the user's tree."""

    @property
    def lock_path(self) -> Path:
        return self.state / "orchestrator.lock"

    def user_git(self) -> dict[str, Path]:
        """How commands about the user's own files address them."""
        return {"work_tree": self.top} if self.shadow else {"at": self.top}

    def in_checkout(self, checkout: Path) -> Path:
        """Where the workspace is inside a checkout of the repository."""
        return checkout / self.prefix if self.prefix else checkout


async def _in_repository(workspace: Path, genv: dict[str, str]) -> tuple[Path, ...] | None:
    """(top, common git dir, workspace) resolved when ``workspace`` is in a git repository
    that does not ignore it; None for a plain folder. Reads only."""
    probe = Git(workspace, genv)
    found = await probe.run(
        "rev-parse", "--show-toplevel", "--git-common-dir", "--is-bare-repository",
        at=workspace, check=False,
    )  # fmt: skip
    lines = found.out.splitlines()
    ignored = await probe.run("check-ignore", "-q", ".", at=workspace, check=False)
    if found.returncode == 0 and len(lines) == 3 and lines[2] == "false" and ignored.returncode:
        return await asyncio.to_thread(_resolve, Path(lines[0]), workspace / lines[1], workspace)
    return None


async def open_repo(workspace: Path, *, env: dict[str, str] | None = None) -> Repo:
    """The repository of ``workspace``: its git repository, else its shadow (created)."""
    genv = base_env(env)
    found = await _in_repository(workspace, genv)
    if found is not None:
        top, common, here = found
        state = state_home(env) / "repos" / slug_of(top)
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
        prefix = str(here.relative_to(top))
        return Repo(
            Git(common, genv), top, "" if prefix == "." else prefix, False, state,
            cache_home(env) / "wt" / slug_of(top),
        )  # fmt: skip
    (folder,) = await asyncio.to_thread(_resolve, workspace)
    state = state_home(env) / "shadows" / slug_of(folder)
    shadow = state / "shadow.git"
    if not (shadow / "HEAD").exists():
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
        await _init_shadow(Git(shadow, genv), at=state)
    return Repo(
        Git(shadow, genv), folder, "", True, state, cache_home(env) / "wt" / slug_of(folder)
    )


async def _init_shadow(git: Git, *, at: Path) -> None:
    await git.run("init", "-q", "--bare", str(git.git_dir), at=at)
    exclude = "\n".join(("# orchestrator: the shadow repository's defaults", *DEFAULT_EXCLUDES))
    await asyncio.to_thread((git.git_dir / "info").mkdir, exist_ok=True)
    await asyncio.to_thread((git.git_dir / "info" / "exclude").write_text, exclude + "\n")


async def check_folder_size(workspace: Path, *, env: dict[str, str] | None = None) -> None:
    """Refuse (`EnvironmentProblem`, exit 3) a plain folder too big to shadow, before anything
    is written: the files its shadow repository does not hold yet are counted with a copy of
    its index, or with a throwaway repository when it has none yet (removed at once)."""
    genv = base_env(env)
    if not await asyncio.to_thread(workspace.is_dir):
        return  # a workspace the run will create is empty
    if await _in_repository(workspace, genv) is not None:
        return
    (folder,) = await asyncio.to_thread(_resolve, workspace)
    state = state_home(env) / "shadows" / slug_of(folder)
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="orchestrator-size-"))
    try:
        git = Git(state / "shadow.git", genv)
        if (git.git_dir / "HEAD").exists():
            if (state / "index").exists():
                await asyncio.to_thread(shutil.copyfile, state / "index", scratch / "index")
        else:
            git = Git(scratch / "probe.git", genv)
            await _init_shadow(git, at=scratch)
        repo = Repo(git, folder, "", True, state, cache_home(env) / "wt" / slug_of(folder))
        await _size_guard(repo, {"GIT_INDEX_FILE": str(scratch / "index")})
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)


def _resolve(*paths: Path) -> tuple[Path, ...]:
    return tuple(p.resolve() for p in paths)


async def snapshot_base(repo: Repo, *, exclude: list[str], message: str) -> tuple[str, bool]:
    """The commit the run starts from and whether the user's checkout was clean.

    ``exclude``: paths relative to ``repo.top`` never taken (the responses directory)."""
    await asyncio.to_thread(repo.state.mkdir, parents=True, exist_ok=True)
    tree = await working_tree(repo, exclude=exclude)
    git = repo.git
    head = await git.rev("HEAD") if not repo.shadow else await git.rev(SHADOW_HEAD)
    if head is not None and await git.out("rev-parse", f"{head}^{{tree}}") == tree:
        return head, True
    parents = [head] if head is not None else []
    commit = await git.commit_tree(tree, parents, message)
    if repo.shadow:
        await git.run("update-ref", SHADOW_HEAD, commit)
    return commit, False


SHADOW_HEAD = "refs/orchestrator/folder"
"""In a shadow repository: the last snapshot of the folder (what later snapshots build on)."""


async def working_tree(repo: Repo, *, exclude: list[str]) -> str:
    """The tree of the user's files as they are now, written through a temporary index."""
    git = repo.git
    fd, tmp = tempfile.mkstemp(prefix="index-", dir=repo.state)
    os.close(fd)
    try:
        if repo.shadow:
            kept = repo.state / "index"
            if kept.exists():
                await asyncio.to_thread(shutil.copyfile, kept, tmp)
            else:
                os.unlink(tmp)
        else:
            index = Path(await git.out("rev-parse", "--git-path", "index", at=repo.top))
            index = index if index.is_absolute() else repo.top / index
            if index.exists():
                await asyncio.to_thread(shutil.copyfile, index, tmp)
            else:
                os.unlink(tmp)
        env = {"GIT_INDEX_FILE": tmp}
        where = repo.user_git()
        specs = ["--", ".", *(f":(exclude){p}" for p in exclude)]
        await git.run("add", "-A", *specs, env=env, **where)  # type: ignore[arg-type]
        tree = await git.out("write-tree", env=env, **where)  # type: ignore[arg-type]
        if repo.shadow:
            await asyncio.to_thread(os.replace, tmp, repo.state / "index")
        return tree
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


async def _size_guard(repo: Repo, env: dict[str, str]) -> None:
    """Refuse to shadow a folder whose new files are too many or too big (exit 3)."""
    listed = await repo.git.run(
        "ls-files", "-z", "--others", "--exclude-standard", env=env, work_tree=repo.top
    )
    names = [n for n in listed.stdout.split(b"\0") if n]
    if len(names) > MAX_SHADOW_FILES:
        raise _too_big(repo, f"{len(names)} files")

    def total() -> int:
        size = 0
        for name in names:
            try:
                size += os.lstat(repo.top / os.fsdecode(name)).st_size
            except OSError:
                pass
        return size

    size = await asyncio.to_thread(total)
    if size > MAX_SHADOW_BYTES:
        raise _too_big(repo, f"{size / 1024**3:.1f} GB")


def _too_big(repo: Repo, what: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"error: workspace {repo.top} is not a git repository and holds {what} to copy for "
        f"each agent (limit {MAX_SHADOW_FILES} files, {MAX_SHADOW_BYTES // 1024**3} GB); nothing "
        "was started (hint: make it a git repository, or list what agents need not see in a "
        ".gitignore in it, or run with --isolation none)"
    )
