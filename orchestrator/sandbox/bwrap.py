"""One sandboxed spawn: the bubblewrap command line, its private temp directory and cgroup.

The command line::

    bwrap <namespaces, mounts> --new-session --info-fd I [--block-fd B] -- <argv>

bubblewrap (the spawn's process, leading a session and group of its own) makes a PID
namespace whose first process, the sandbox's init, leads a new session and process group
(``--new-session``); the agent's command runs in that group. The init's pid (outside) is
what bubblewrap says on the info pipe, and it is the agent's group: SIGTERM to it reaches
the agent's processes, not the init (a namespace's init ignores a signal it has no handler
for, even from outside) nor bubblewrap, which is in the spawn's own group; so the agent gets
its grace period, and bubblewrap reports its exit code. No wrapper process is needed to keep
bubblewrap from a SIGTERM (``env --ignore-signal=TERM`` outside, and the ``env`` inside that
gave the agent its SIGTERM back, cost two execs per start, ~1.2 ms: B13). When the init ends,
the kernel kills every process left in the namespace, whatever its session, group or
environment. bubblewrap makes a fresh ``/proc`` showing only the sandbox, ``/dev``, and a
read-only view of ``/`` in which only the working directory, a private temp directory and
the plan's ``writable`` paths are writable; the run directory, git hooks and git config are
read-only even inside them; home secrets are empty. ``--die-with-parent`` ties bubblewrap to
the thread that spawned it (the parent-death signal, which ``setpriv`` gave before) and the
namespace to bubblewrap. ``--new-session`` also takes the terminal away from the agent (no
``TIOCSTI`` into the user's shell).

With a cgroup the spawn joins it without an exec of its own: bubblewrap tells the sandbox's
first process (``--info-fd``) while it builds the mounts, `Sandboxed.join` writes that pid
into the cgroups and only then releases it (``--block-fd``): nothing inside runs before it
is counted, and every process it forks is. The block descriptor is opened read-write, so
bubblewrap never reads an end of file from it: if the orchestrator dies before the release,
the sandbox waits (and dies with bubblewrap) instead of running unlimited. The same info
gives the sandbox's init, whose exit the spawn waits for: a PID namespace is empty once its
init has exited, so no scan of ``/proc`` is needed to know the sandbox is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.sandbox.cgroups import AgentCgroup, open_agent
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.scratch import SpareTmps, own_dir

INSIDE_VAR = "ORCHESTRATOR_SANDBOXED"
"""Set inside every sandbox: a run started by a confined agent is confined by its sandbox."""
FORWARD = str(Path(__file__).with_name("forward.py"))
_INFO_CAP = 4096
FIRST_SIGNAL_CODE = 129
LAST_SIGNAL_CODE = 128 + 64
"""bubblewrap reports a command killed by signal N as exit code 128 + N."""


@dataclass(slots=True)
class Sandboxed:
    """The resources of one sandboxed spawn; `release` once its processes are gone."""

    argv: list[str]
    env: dict[str, str]
    tmp: Path
    cgroup: AgentCgroup | None
    pass_fds: tuple[int, ...] = ()
    """The child's ends of the info and block pipes: passed to the spawn, then closed here."""
    tmp_done: bool = False
    """The temp directory is removed or kept (`release` leaves it then)."""
    options: int = 0
    """With ``ahead``: where bubblewrap's options end in `argv` (``--`` and the command
    follow), for a process that execs bubblewrap with its options read from a descriptor."""
    spares: SpareTmps | None = None
    """Where an empty temp directory is kept for the next spawn (`release`)."""
    _info: int = -1
    _block: int = -1
    _said: bytes = b""
    _init: int | None = None

    @property
    def joins(self) -> bool:
        """Whether `join` must run (and succeed) before the sandbox starts its command."""
        return self._block >= 0

    @property
    def info(self) -> int:
        """Our end of bubblewrap's info pipe while it is still to be read (else -1)."""
        return self._info

    def spawned(self) -> None:
        """Close our copies of the child's ends (the spawn has them, or failed)."""
        for fd in self.pass_fds:
            os.close(fd)
        self.pass_fds = ()

    def join(self) -> int | None:
        """Put the sandbox's first process into the agent's cgroup, then let it start the
        command; its init's pid (see `read_info`). Synchronous: the cgroup write waits for
        the kernel (~1 ms): run it in a thread. OSError when it cannot be joined (the caller
        kills the spawn); when bubblewrap died before it said anything, there is nothing to
        join (None)."""
        block = self._block
        self._block = -1
        try:
            os.set_blocking(self._info, True)
            self.read_info()  # blocks until bubblewrap has said all
            pid = self._init
            if pid is None:
                return None
            assert self.cgroup is not None
            for procs in self.cgroup.procs:
                procs.write_text(str(pid))
            try:
                os.write(block, b"x")
            except BrokenPipeError:  # bubblewrap is gone (killed meanwhile): nothing started
                return None
            return pid
        finally:
            os.close(block)

    def read_info(self) -> bool:
        """Read what bubblewrap said so far (without waiting, unless the descriptor was made
        blocking); True once it has said all (it closed the pipe): then `init_pid` knows.
        Its first process, the sandbox's init, leads the sandbox's session and group
        (``--new-session``): the group that stops the agent."""
        if self._info < 0:
            return True
        while chunk := _read_some(self._info):
            if len(self._said) < _INFO_CAP:
                self._said += chunk
        if chunk is None:
            return False
        os.close(self._info)
        self._info = -1
        self._init = _child_pid(self._said)
        return True

    async def said(self) -> int | None:
        """`init_pid`, waiting (on the running loop) until bubblewrap has said it: right after
        it made the namespace, before the mounts. None when it died first."""
        if self.init_pid() is not None or self._info < 0:  # said all already
            return self._init
        loop = asyncio.get_running_loop()
        fd = self._info
        done = loop.create_future()

        def readable() -> None:
            if self.read_info():
                loop.remove_reader(fd)  # read_info closed it: forget it before its number is reused
                if not done.done():
                    done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            if self._info >= 0:
                loop.remove_reader(fd)
        return self._init

    def init_pid(self) -> int | None:
        """The pid (outside) of the sandbox's init, once bubblewrap said it (None before,
        or when it died first): when the init is gone, every process of the sandbox is (a
        PID namespace ends with its init)."""
        if self._info >= 0:
            os.set_blocking(self._info, False)
            if not self.read_info():  # bubblewrap is still there, has not said all
                return None
        return self._init

    def release_nowait(self) -> bool:
        """`release` when it is cheap (the temp directory is empty: a few system calls, fine
        on the event loop); False when it is not, and `release` must run in a thread."""
        if not self._kept():
            try:
                os.rmdir(self.tmp)
            except FileNotFoundError:
                pass
            except OSError:
                return False
        self.tmp_done = True
        self.release()
        return True

    def _kept(self) -> bool:
        return self.spares is not None and self.spares.keep(self.tmp)

    def release(self) -> None:
        """Remove the cgroup and the private temp directory (synchronous: may be large); an
        empty temp directory is kept for the next spawn (`SpareTmps`)."""
        self.spawned()
        for fd in (self._info, self._block):  # a spawn that failed: never read
            if fd >= 0:
                os.close(fd)
        self._info = self._block = -1
        if self.cgroup is not None:
            self.cgroup.remove()
        if not self.tmp_done and not self._kept():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp_done = True


def _read_some(fd: int) -> bytes | None:
    """What ``fd`` has now (``b""``: end of file; None: nothing yet, it is non-blocking)."""
    try:
        return os.read(fd, _INFO_CAP)
    except BlockingIOError:
        return None


def _child_pid(said: bytes) -> int | None:
    try:
        pid = json.loads(said)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 1 else None


@dataclass(frozen=True, slots=True)
class Ahead:
    """A bubblewrap started ahead (`orchestrator.process.warm`), waiting for its options: its
    cgroup, already joined, and its info pipe (our end, and the number it has there)."""

    cgroup: AgentCgroup | None
    info: int
    info_child: int


def wants_cgroup(conf: Confinement) -> bool:
    """Whether each spawn under ``conf`` gets a cgroup of its own (limits to enforce)."""
    return conf.cgroups is not None and (conf.memory is not None or conf.pids is not None)


def sandbox(
    conf: Confinement,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    ahead: Ahead | None = None,
) -> Sandboxed:
    """Make the private temp directory and the cgroup of one spawn and its command line.

    With ``ahead`` the command line is the one its process execs, without a join (it is in
    its cgroup already, so everything it forks is born there); the environment is given in
    the options (``--clearenv``, ``--setenv``), since that process was started with another
    one.

    OSError when either cannot be made (the spawn does not happen)."""
    own_dir(conf.scratch)
    tmp = conf.spares.take(conf.scratch)
    made = Sandboxed([], {}, tmp, None, spares=conf.spares)
    made.env = {**env, INSIDE_VAR: "1"}
    if not _inside(env.get("TMPDIR", ""), (Path(cwd), *conf.writable)):
        made.env["TMPDIR"] = str(tmp)  # a TMPDIR the plan made writable stays
    inner = _inner(conf)
    if ahead is not None:
        made.cgroup, made._info = ahead.cgroup, ahead.info
        environ = [x for k, v in made.env.items() for x in ("--setenv", k, v)]
        made.argv = [
            conf.bwrap, *bwrap_args(conf, cwd=Path(cwd), tmp=tmp), "--info-fd",
            str(ahead.info_child), "--clearenv", *environ,
        ]  # fmt: skip
        made.options = len(made.argv)
        made.argv += ["--", *inner, *argv]
        return made
    try:
        if wants_cgroup(conf):
            assert conf.cgroups is not None
            made.cgroup = open_agent(conf.cgroups, memory=conf.memory, pids=conf.pids)
        info, info_child = os.pipe()
        made._info = info
        made.pass_fds += (info_child,)
        sync = ["--info-fd", str(info_child)]
        if made.cgroup is not None:
            block_r, made._block = os.pipe()
            try:
                # Read-write: bubblewrap holds a writer too, so it never sees an EOF.
                block_child = os.open(f"/proc/self/fd/{block_r}", os.O_RDWR | os.O_CLOEXEC)
            finally:
                os.close(block_r)
            made.pass_fds += (block_child,)
            sync += ["--block-fd", str(block_child)]
        made.argv = [
            conf.bwrap, *bwrap_args(conf, cwd=Path(cwd), tmp=tmp), *sync, "--", *inner, *argv,
        ]  # fmt: skip
    except BaseException:
        made.release()
        raise
    return made


def _inner(conf: Confinement) -> list[str]:
    """What runs before the command inside: nothing, or for ``network: gateway`` the
    gateway's relay, which then execs the command."""
    if conf.network == "gateway" and conf.gateway_port is not None:
        return [sys.executable, "-I", "-S", FORWARD, str(conf.gateway_socket),
                str(conf.gateway_port), "--"]  # fmt: skip
    return []


def _inside(path: str, trees: Sequence[Path]) -> bool:
    if not path or not os.path.isabs(path):
        return False
    where = Path(os.path.normpath(path))
    return any(where == t or t in where.parents for t in trees)


def bwrap_args(conf: Confinement, *, cwd: Path, tmp: Path) -> list[str]:
    """bubblewrap's options for a spawn working in ``cwd`` (see the module docstring)."""
    args = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--new-session"]
    args += ["--cap-drop", "ALL"]
    if conf.network in ("none", "gateway"):  # gateway: only loopback, relayed (`forward`)
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    writable = [cwd, tmp, *conf.writable]
    protected = list(conf.protected)
    for tree in (cwd, *conf.writable):
        more_writable, more_protected = _git_parts(tree)
        writable += more_writable
        protected += more_protected
    for path in dict.fromkeys(writable):
        args += ["--bind-try", str(path), str(path)]
    for path in dict.fromkeys(protected):
        args += ["--ro-bind-try", str(path), str(path)]
    for path in conf.hidden:
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        else:
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--chdir", str(cwd)]
    return args


def _git_parts(tree: Path) -> tuple[list[Path], list[Path]]:
    """For a working tree: git directories outside it that a commit must write (a linked
    worktree's), and the parts that run code or change git's behaviour (hooks, config),
    which stay read-only."""
    dot_git = tree / ".git"
    writable: list[Path] = []
    gitdirs: list[Path] = []
    if dot_git.is_dir():
        gitdirs.append(dot_git)
    elif dot_git.is_file():
        try:
            text = dot_git.read_text(errors="replace")
        except OSError:
            text = ""
        if text.startswith("gitdir:"):
            own = (tree / text[len("gitdir:") :].strip()).resolve()
            common = own
            try:
                common = (own / (own / "commondir").read_text().strip()).resolve()
            except OSError:
                pass
            writable += [own, common]
            gitdirs += [own, common]
    protected: list[Path] = []
    for gitdir in dict.fromkeys(gitdirs):
        protected += [gitdir / "hooks", gitdir / "config"]
        protected += _submodule_parts(gitdir / "modules")
    return writable, protected


def _submodule_parts(modules: Path, depth: int = 0) -> Iterator[Path]:
    """``hooks`` and ``config`` of every submodule's git directory (nested ones too)."""
    if depth > 4:
        return
    try:
        entries = list(os.scandir(modules))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            sub = Path(entry.path)
            if (sub / "HEAD").exists():
                yield sub / "hooks"
                yield sub / "config"
                yield from _submodule_parts(sub / "modules", depth + 1)
            else:  # a submodule named a/b lives in modules/a/b
                yield from _submodule_parts(sub, depth + 1)


def exit_code(code: int) -> int:
    """The command's code as an unsandboxed spawn reports it: negative for a signal."""
    if FIRST_SIGNAL_CODE <= code <= LAST_SIGNAL_CODE:
        return -(code - 128)
    return code
