"""One sandboxed spawn: the bubblewrap command line, its private temp directory and cgroup.

The command line, outside in::

    /bin/sh -c JOIN sh <cgroup.procs files> -- bwrap <namespaces, mounts> -- env
        --default-signal=TERM <argv>

``sh`` joins the agent's cgroups (so every process it will ever fork is counted) and sets
SIGTERM to ignored before it execs bubblewrap, so that a SIGTERM to the spawn's process
group reaches the agent's processes but not bubblewrap: the agent gets its grace period and
bubblewrap reports its exit code. ``env --default-signal=TERM`` gives the agent the default
disposition back. bubblewrap makes a PID namespace (its init is pid 1: when it ends, the
kernel kills every process left in the namespace, whatever its session, group or
environment), a fresh ``/proc`` showing only the sandbox, ``/dev``, and a read-only view of
``/`` in which only the working directory, a private temp directory and the plan's
``writable`` paths are writable; the run directory, git hooks and git config are read-only
even inside them; home secrets are empty. ``--die-with-parent`` ties the namespace to
bubblewrap, which dies with the orchestrator (the spawn's death signal).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.sandbox.cgroups import AgentCgroup, open_agent
from orchestrator.sandbox.confinement import Confinement
from orchestrator.sandbox.scratch import own_dir

JOIN = (
    'trap "" TERM; while [ "$1" != -- ]; do echo 0 >"$1" || exit 125; shift; done; shift; exec "$@"'
)
"""Join each cgroup named before ``--``, ignore SIGTERM, exec the rest."""
INSIDE_VAR = "ORCHESTRATOR_SANDBOXED"
"""Set inside every sandbox: a run started by a confined agent is confined by its sandbox."""
ENV = "/usr/bin/env"
SHELL = "/bin/sh"
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

    def release(self) -> None:
        """Remove the cgroup and the private temp directory (synchronous: may be large)."""
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.tmp, ignore_errors=True)


def sandbox(
    conf: Confinement, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> Sandboxed:
    """Make the private temp directory and the cgroup of one spawn and its command line.

    OSError when either cannot be made (the spawn does not happen)."""
    own_dir(conf.scratch)
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=conf.scratch))
    cgroup = None
    try:
        if conf.cgroups is not None and (conf.memory is not None or conf.pids is not None):
            cgroup = open_agent(conf.cgroups, memory=conf.memory, pids=conf.pids)
        procs = [str(p) for p in cgroup.procs] if cgroup is not None else []
        inner = [conf.bwrap, *bwrap_args(conf, cwd=Path(cwd), tmp=tmp), "--", ENV]
        line = [SHELL, "-c", JOIN, "sh", *procs, "--", *inner, "--default-signal=TERM", *argv]
    except BaseException:
        Sandboxed([], {}, tmp, cgroup).release()
        raise
    child_env = {**env, INSIDE_VAR: "1"}
    if not _inside(env.get("TMPDIR", ""), (Path(cwd), *conf.writable)):
        child_env["TMPDIR"] = str(tmp)  # a TMPDIR the plan made writable stays
    return Sandboxed(line, child_env, tmp, cgroup)


def _inside(path: str, trees: Sequence[Path]) -> bool:
    if not path or not os.path.isabs(path):
        return False
    where = Path(os.path.normpath(path))
    return any(where == t or t in where.parents for t in trees)


def bwrap_args(conf: Confinement, *, cwd: Path, tmp: Path) -> list[str]:
    """bubblewrap's options for a spawn working in ``cwd`` (see the module docstring)."""
    args = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--cap-drop", "ALL"]
    if conf.network == "none":
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
