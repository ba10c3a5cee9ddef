"""Workspaces as git bundles: the driver snapshots its workspace into a shadow repository, a
node checks the snapshot out, and the node's change comes back as a bundle the driver applies.

The shadow repository (``--git-dir`` apart, ``--work-tree`` the workspace) never touches a
``.git`` the workspace may have, and sees the workspace's ``.gitignore`` files. A snapshot is
taken once and reused by every attempt until a change is applied, so a wave of attempts costs
one ``git add``. A change is applied whole or not at all (``git apply --index``): one that no
longer applies, because another attempt changed the same lines first, fails its attempt and
leaves the workspace as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from orchestrator.cluster import pristine
from orchestrator.cluster.wire import Change
from orchestrator.process.capture import release, start_child

_IDENTITY = ("-c", "user.name=orchestrator", "-c", "user.email=orchestrator@localhost")
_GIT_TIMEOUT = 300.0
SHADOW_PREFIX = "orchestrator-cluster-"


class WorkspaceError(Exception):
    """A git step on a workspace failed; the message names it and what git said."""


def git_env(home: Path) -> dict[str, str]:
    """A git environment that reads no user or system configuration."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }


async def git(*args: str, cwd: Path, env: dict[str, str], data: bytes | None = None) -> bytes:
    """Run one git command to its end; its stdout, or `WorkspaceError` with its stderr."""
    proc = await start_child(
        "git",
        *_IDENTITY,
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(_GIT_TIMEOUT):
            out, err = await proc.communicate(data)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        release(proc)
    if proc.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        raise WorkspaceError(f"git {args[-1] if args else ''}: {said[-1] if said else 'failed'}")
    return out


class Snapshots:
    """The driver's shadow repository of one workspace; `open` before use, `close` after."""

    def __init__(self, workspace: Path, *, exclude: tuple[Path, ...] = ()) -> None:
        self.workspace = workspace
        self._exclude = exclude
        self._root = Path(tempfile.mkdtemp(prefix=SHADOW_PREFIX))
        self._held = hold(self._root)
        self._dir = self._root / "shadow.git"
        self._env = git_env(self._root)
        self._lock = asyncio.Lock()
        self._current: tuple[str, bytes] | None = None
        self._made: dict[str, bytes] = {}
        self.applied = 0

    async def _git(self, *args: str, data: bytes | None = None) -> bytes:
        where = ("--git-dir", str(self._dir), "--work-tree", str(self.workspace))
        return await git(*where, *args, cwd=self.workspace, env=self._env, data=data)

    async def open(self) -> None:
        await asyncio.to_thread(sweep_stale, self._root.parent, SHADOW_PREFIX)
        await git("--git-dir", str(self._dir), "init", "-q", cwd=self._root, env=self._env)
        lines = []
        for path in self._exclude:
            try:
                rel = path.resolve().relative_to(self.workspace.resolve())
            except ValueError:
                continue
            lines.append(f"/{rel.as_posix()}/")
        (self._dir / "info").mkdir(exist_ok=True)
        (self._dir / "info" / "exclude").write_text("".join(f"{ln}\n" for ln in lines))

    async def base(self, workspace: Path) -> tuple[str, str]:
        """The workspace as a commit (taken once per state; ``workspace`` is this one)."""
        return (await self._snapshot())[0], ""

    async def bundle(self, sha: str) -> bytes:
        """The bundle of base ``sha`` (one of the last few handed out)."""
        async with self._lock:
            return self._made[sha]

    async def _snapshot(self) -> tuple[str, bytes]:
        async with self._lock:
            if self._current is None:
                await self._git("add", "-A", ".")
                await self._git("commit", "-q", "--allow-empty", "--no-verify", "-m", "base")
                sha = (await self._git("rev-parse", "HEAD")).decode().strip()
                bundle = await self._git("bundle", "create", "-q", "-", "HEAD")
                self._current, self._made[sha] = (sha, bundle), bundle
                while len(self._made) > 4:
                    del self._made[next(iter(self._made))]
            return self._current

    async def integrate(self, change: Change, workspace: Path) -> None:
        """Apply ``change`` to the workspace, whole or not at all."""
        if change.empty:
            return
        async with self._lock:
            path = self._root / "incoming.bundle"
            await asyncio.to_thread(_write, path, change.bundle)
            ref = f"+HEAD:refs/attempts/{_ref(change)}"
            await self._git("fetch", "-q", str(path), ref)
            diff = await self._git("diff", "--binary", change.base, change.head)
            if diff:
                await self._git("apply", "--index", "--whitespace=nowarn", "-", data=diff)
                self._current = None
                self.applied += 1

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
        os.close(self._held)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _ref(change: Change) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in change.agent_id)


SPARES = 32
"""Checkouts a node keeps for its next attempts (`NodeRepo.give_back`), at most."""


class NodeRepo:
    """A node's one repository of the bases it was sent: a base travels to a node once,
    then each attempt gets a worktree of it (``git worktree add``, then its files), or the
    worktree an earlier attempt left exactly as it was made (`give_back`, `take`).

    Each checkout lives in a directory of its own under ``root`` (its parent, named as it
    is), which holds the attempt's other files."""

    def __init__(self, root: Path, *, spares: int = SPARES) -> None:
        self.dir = root / "repo.git"
        self._env = git_env(root)
        self._lock = asyncio.Lock()
        self._bases: set[str] = set()
        self._spares: list[tuple[Path, str]] = []
        """Checkouts to hand out again, with the commit each is at (the last kept first)."""
        self._keep = spares
        self.reused = 0
        """Attempts that were given a kept checkout."""

    async def _git(self, *args: str) -> bytes:
        return await git("--git-dir", str(self.dir), *args, cwd=self.dir.parent, env=self._env)

    async def _fetch(self, base: str, bundle: Callable[[], Awaitable[bytes]]) -> None:
        """Make sure this node has commit ``base`` (under the lock)."""
        if not self._bases and not self.dir.exists():
            await self._git("init", "-q", "--bare")
        if base not in self._bases:
            path = self.dir.parent / f"{base}.bundle"
            await asyncio.to_thread(_write, path, await bundle())
            try:
                await self._git("bundle", "unbundle", str(path))  # HEAD or a named ref
                await self._git("update-ref", f"refs/bases/{base}", base)
            finally:
                await asyncio.to_thread(path.unlink)
            self._bases.add(base)

    async def take(self, base: str, bundle: Callable[[], Awaitable[bytes]]) -> Path:
        """A checkout of commit ``base``: the one last kept (moved to ``base`` if it is at
        another commit: one ``git reset``), else a new one in a directory of its own.
        ``bundle`` is called for the base's bundle the first time this node sees that base.
        On `WorkspaceError` nothing of a new checkout is left."""
        while self._spares:
            spare, head = self._spares.pop()
            if head != base:
                try:
                    async with self._lock:
                        await self._fetch(base, bundle)
                except BaseException:
                    self._spares.append((spare, head))  # still as it was: kept
                    raise
                try:
                    await git("reset", "-q", "--hard", base, cwd=spare, env=self._env)
                except WorkspaceError:
                    await self.remove(spare)
                    continue
            self.reused += 1
            return spare
        here = Path(tempfile.mkdtemp(prefix="attempt-", dir=self.dir.parent))
        # a name of its own: git names a worktree's record after it, and same names race
        into = here / here.name
        try:
            await self.checkout(base, bundle, into)
        except WorkspaceError:
            await self.remove(into)
            raise
        return into

    async def checkout(self, base: str, bundle: Callable[[], Awaitable[bytes]], into: Path) -> None:
        """``into`` (not existing yet) becomes a checkout of commit ``base``; ``bundle`` is
        called for the base's bundle the first time this node sees that base."""
        async with self._lock:
            await self._fetch(base, bundle)
            # one at a time: `worktree add` reads every other worktree's records, and a
            # half-made one fails it; the files are written outside the lock
            await self._git("worktree", "add", "-q", "--no-checkout", "--detach", str(into), base)
        await git("reset", "-q", "--hard", cwd=into, env=self._env)

    async def give_back(self, checkout: Path, base: str, *, clean: bool) -> None:
        """The attempt in ``checkout`` is over. The checkout is kept for the next attempt
        when ``clean`` (git sees nothing in it but commit ``base``, ignored files included,
        and no process of the attempt is left) and it is untouched otherwise too
        (`pristine.untouched`): then everything else in its directory is removed. Else it
        goes, with its record (`remove`)."""
        if clean and len(self._spares) < self._keep:
            record = self.dir / "worktrees" / checkout.name
            kept = await asyncio.to_thread(_keepable, checkout, record, base)
            if kept and len(self._spares) < self._keep:
                self._spares.append((checkout, base))
                return
        await self.remove(checkout)

    async def remove(self, checkout: Path) -> None:
        """Remove ``checkout`` with its directory (its parent) and its record in the
        repository.

        Git reads every worktree's record at each `worktree add`: with the records of a
        thousand finished attempts left behind each one took 40 ms against 8, and each kept
        a copy of the checkout's index. The record goes by a rename while no `worktree add`
        runs (one that found it listed and then missing dies: "Invalid path"), and is
        deleted after, with the checkout."""
        async with self._lock:
            trash = await asyncio.to_thread(self._unrecord, checkout)
        await asyncio.to_thread(_remove_all, (trash, checkout.parent))

    def _unrecord(self, checkout: Path) -> Path:
        """Move ``checkout``'s record out of the repository; where it went. Git names a
        record after its checkout's directory (a number added only to a name taken, and each
        checkout's is unique), so nothing the checkout holds, its ``.git`` file included,
        decides what is touched."""
        trash = self.dir.parent / f"removed-{checkout.name}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.dir / "worktrees" / checkout.name, trash)
        return trash

    async def prune(self) -> None:
        """Forget the worktrees whose directories are gone."""
        if self.dir.exists():
            await self._git("worktree", "prune")


def _keepable(checkout: Path, record: Path, base: str) -> bool:
    return pristine.untouched(checkout, record, base) and pristine.empty_beside(checkout)


def _remove_all(paths: tuple[Path, ...]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


async def collect(into: Path, base: str, agent_id: str) -> Change:
    """On a node: everything the attempt changed in ``into`` (committed by it or not) as one
    commit on ``base``; an attempt that changed nothing costs one ``git status``."""
    return (await examine(into, base, agent_id))[0]


async def examine(into: Path, base: str, agent_id: str) -> tuple[Change, bool]:
    """`collect`, and whether git sees nothing in ``into`` but ``base``: no change, and no
    ignored file either (those are no change, but the next attempt would find them)."""
    env = git_env(into.parent)
    status = await git(
        "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored=matching",
        cwd=into, env=env,
    )  # fmt: skip
    lines = status.decode(errors="replace").splitlines()
    head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), base)
    if head == base and all(ln.startswith(("#", "!")) for ln in lines):
        return Change(agent_id, base, base, b""), not any(ln.startswith("!") for ln in lines)
    await git("add", "-A", ".", cwd=into, env=env)
    await git("commit", "-q", "--allow-empty", "--no-verify", "-m", agent_id, cwd=into, env=env)
    head = (await git("rev-parse", "HEAD", cwd=into, env=env)).decode().strip()
    bundle = await git("bundle", "create", "-q", "-", "HEAD", f"^{base}", cwd=into, env=env)
    return Change(agent_id, base, head, bundle), False


def hold(root: Path) -> int:
    """A lock on ``root`` held while this process lives (the kernel lets go when it dies)."""
    fd = os.open(root / ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def sweep_stale(tmp: Path, prefix: str) -> list[Path]:
    """Remove the ``prefix*`` directories in ``tmp`` whose process is gone (nobody holds their
    lock): what a killed driver or a dead node's host left behind."""
    removed = []
    for root in tmp.glob(f"{prefix}*"):
        try:
            fd = os.open(root / ".lock", os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # not one of ours, or one being made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its process is alive
        finally:
            os.close(fd)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed
