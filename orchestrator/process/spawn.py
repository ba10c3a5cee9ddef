"""The process layer: every subprocess of the program is started, read and stopped here.

A child runs in a session (and process group) of its own, ends when the orchestrator dies
(a run's: through the process's guard, `orchestrator.process.guard`; else SIGKILL when the
spawning thread dies, ``PR_SET_PDEATHSIG`` set by util-linux ``setpriv`` or by ``prctl`` in a
``preexec_fn``), and its pipes are read by loop callbacks, not ``StreamReader.readline``:
lines are bounded, decoded leniently and stripped of terminal escapes before anyone sees
them. The spawn itself is synchronous (fork and exec, as ``loop.subprocess_exec`` does too)
and then nothing is connected asynchronously, so a cancellation can never land half-way
through a spawn (CPython 3.11's ``subprocess_exec``, cancelled while it connects the pipes,
waits for every holder of them to close them). A run ends on *process exit*, seen through a
pidfd; pipes still held by a grandchild are given ``drain`` seconds and then the whole group
is killed. Every exit path, cancellation included, leaves no process of the group behind.
Descendants that escaped the group (``setsid``) are found afterwards by `sweep_run` through
the ``ORCHESTRATOR_RUN_ID`` marker in their environment.

Linux is the target: elsewhere the ``/proc`` helpers find nothing and ``prctl`` is skipped.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

from orchestrator.process.child import Child
from orchestrator.process.group import kill_group, stop_group
from orchestrator.process.guard import GUARD
from orchestrator.process.lines import DEFAULT_MAX_LINE, Stream
from orchestrator.process.orphans import libc_prctl
from orchestrator.process.pipes import Pipes, spawn_turn
from orchestrator.process.procfs import RUN_ID_VAR
from orchestrator.process.secretpipe import SECRETS_FD_VAR, open_secrets
from orchestrator.process.warm import WARM, launch_ahead
from orchestrator.sandbox.bwrap import Sandboxed, exit_code
from orchestrator.sandbox.bwrap import sandbox as confine
from orchestrator.sandbox.confinement import Confinement

DeathSignal: TypeAlias = Literal["auto", "guard", "setpriv", "prctl", "off"]
"""How a child learns that the orchestrator died (see `run_streaming`)."""


_PR_SET_PDEATHSIG = 1
_DRAIN_CAP = 10.0
"""However busy the pipes are after the child exited, they are cut off after this many seconds."""


def _each(on_line: Callable[[Stream, str], None], stream: Stream, lines: list[str]) -> None:
    for line in lines:
        on_line(stream, line)


def _ignore_pid(pid: int) -> None:
    pass


async def run_streaming(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[Stream, str], None] | None = None,
    on_lines: Callable[[Stream, list[str]], None] | None = None,
    on_start: Callable[[int], None] = _ignore_pid,
    on_activity: Callable[[], None] | None = None,
    grace: float = 5.0,
    shell: bool = False,
    max_line: int = DEFAULT_MAX_LINE,
    drain: float = 0.2,
    pdeathsig: DeathSignal = "auto",
    sandbox: Confinement | None = None,
    secrets: Mapping[str, str] | None = None,
) -> int:
    """Run ``argv`` in a new process group, call ``on_line`` per output line, return the exit code.

    ``on_lines`` instead gets the lines of each chunk read at once as a list, in order (one
    call for a burst of output: what a program that floods its pipe costs); pass one of the two.

    The code is negative (``-signum``) when the child was killed by a signal. With ``shell`` the
    elements of ``argv`` are joined by spaces and run by ``/bin/sh -c``. ``on_start`` gets the
    pid (which is also the group id) right after the spawn. ``on_activity`` is called for
    every chunk the child writes, a whole line or not (progress dots, ``\\r`` bars). Lines
    are at most ``max_line`` bytes before cleaning; longer ones end in
    `` …[truncated N bytes]``. After the child exits, reading goes on until the pipes close,
    or ``drain`` seconds pass without output (a grandchild holding them), or 10 s at most;
    then the group is killed.

    Nothing outlives the orchestrator: ``pdeathsig="guard"`` leaves that to the process's
    guard (`orchestrator.process.guard`), which stops every process carrying the run's
    marker (``ORCHESTRATOR_RUN_ID`` in ``env``) when the orchestrator dies, with no cost per
    spawn (OSError when ``env`` has no run id or no guard can be started). The others give
    the child SIGKILL when the thread that spawned it (the event loop's) dies:
    ``"setpriv"`` execs the command through util-linux ``setpriv --pdeathsig KILL`` (vfork,
    so the loop waits ~0.3 ms; one extra exec, ~+0.9 ms and ~1 ms of CPU per spawn whatever
    our size); ``"prctl"`` calls prctl in a ``preexec_fn`` (forces fork(): the loop waits ~2
    ms at 20 MB RSS, ~5 ms at 80 MB, ~20 ms at 500 MB); ``"auto"`` takes the guard for a
    run's spawn, else setpriv when installed (util-linux 2.33+), else prctl; ``"off"`` none.
    A script without a ``#!`` line runs with /bin/sh, as ``execvp`` (setpriv's, bubblewrap's)
    would run it, instead of failing with ENOEXEC.

    With ``sandbox`` the command runs confined (`orchestrator.sandbox.bwrap`): its own PID
    namespace, ``/proc`` and mount view, ``cwd`` writable, a private ``TMPDIR``, its cgroup
    limits; ``on_start`` gets the pid of the sandbox's init, which leads the group the
    command runs in (bubblewrap is outside it), once bubblewrap has said it (after the
    cgroup's join: a millisecond or two after the spawn).
    There ``"auto"`` takes bubblewrap's own ``--die-with-parent`` (no extra exec).

    With ``secrets`` (name -> value) the program finds them on a pipe whose descriptor
    ``ORCHESTRATOR_SECRETS_FD`` names (`orchestrator.process.secretpipe`): read once, it is
    empty for whatever it starts afterwards; they are never in its environment, arguments
    or files.

    Spawn errors (``FileNotFoundError``, ``PermissionError``, other ``OSError``) propagate
    before ``on_start`` is called; a sandbox's cgroup that cannot be joined raises its
    ``OSError`` after it, once the spawn (which never ran the command) is gone. An exception
    raised by ``on_line`` (or ``on_lines``) kills the group at once and is re-raised here once
    the child is gone. On cancellation the group is stopped (see `stop_group`) and
    ``CancelledError`` propagates.
    """
    if on_lines is None and on_line is not None:
        on_lines = functools.partial(_each, on_line)
    elif on_lines is None or on_line is not None:
        raise TypeError("run_streaming takes one of on_line and on_lines")
    args = _command_line(argv, shell=shell)
    loop = asyncio.get_running_loop()
    await spawn_turn(loop)
    # From here to the `try` nothing awaits: once the child exists, every way out (a
    # cancellation included) goes through `stop_group`, so no spawn is ever half-made.
    confined: Sandboxed | None = None
    handed = open_secrets(secrets) if secrets else None
    child: Child | None = None
    try:
        if sandbox is not None:
            _check_program(args[0], env=env, cwd=cwd)  # reported as an unconfined spawn would
            # Secrets go through a descriptor only a fresh spawn can pass.
            ahead = None if handed is not None else launch_ahead(sandbox, args, cwd=cwd, env=env)
            if ahead is not None:
                confined, child = ahead[0], Child(loop, ahead[1].proc, ahead[1].fds)
            else:
                confined = confine(sandbox, args, cwd=cwd, env=env)
            args, env = confined.argv, confined.env
        if child is None:
            if handed is not None:
                env = {**env, SECRETS_FD_VAR: str(handed)}
            if confined is not None and pdeathsig == "auto":
                pdeathsig = "off"  # bubblewrap's --die-with-parent: no exec of setpriv
            args, preexec = _launch(args, env=env, cwd=cwd, how=pdeathsig)
            fds = confined.pass_fds if confined is not None else ()
            fds += (handed,) if handed is not None else ()
            try:
                child = Child.start(loop, args, cwd=cwd, env=env, preexec=preexec, pass_fds=fds)
            except OSError as exc:
                if exc.errno != errno.ENOEXEC:
                    raise
                # Not a binary, no `#!` line: a shell script, as execvp would run it.
                script = [_check_program(args[0], env=env, cwd=cwd), *args[1:]]
                child = Child.start(
                    loop, ["/bin/sh", *script], cwd=cwd, env=env, preexec=preexec, pass_fds=fds
                )
    except BaseException:
        if confined is not None:
            confined.release()
        raise
    finally:
        if handed is not None:
            os.close(handed)  # the child's now: once it has read it, nobody can
    if confined is not None:
        confined.spawned()
    pipes = Pipes(loop, on_lines, max_line, child.fds, pgid=child.pid, on_activity=on_activity)
    joined: asyncio.Future[int | None] | None = None
    group: int | None = None  # a sandbox's: its init's session (see `orchestrator.sandbox.bwrap`)
    try:
        try:
            if confined is not None and confined.joins:
                # While bubblewrap builds the mounts; its command waits for the join.
                joined = loop.run_in_executor(None, confined.join)
                group = await asyncio.shield(joined)
            elif confined is not None:
                group = await confined.said()
            on_start(group or child.pid)
            await child.wait()
            await _drain(pipes, drain)
        finally:
            if joined is not None and not (joined.done() and joined.exception() is None):
                # Nothing of the agent ran yet (or it cannot be limited): no grace to give.
                kill_group(child.pid, signal.SIGKILL)
            # After a normal exit this only SIGKILLs leftovers, e.g. a pipe-holding grandchild.
            settled = joined is None or joined.done()  # else the join still reads the info
            last = confined.init_pid() if confined is not None and settled else None
            await stop_group(child, grace=grace, last=last, group=group)
            pipes.close()
    finally:
        pipes.detach()
        child.close()
        if confined is not None:
            if joined is not None:  # the join ends once bubblewrap is gone: waited for
                await asyncio.shield(asyncio.wait([joined]))
                if not joined.cancelled():
                    joined.exception()  # seen: a stop that came first left it unasked
            warm = WARM.get()
            if warm is not None:  # in a run: the run waits for the clean-up, not the agent
                warm.later(confined.release)
            elif not confined.release_nowait():  # the agent left files in its temp directory:
                # off the loop (it may be large), and finished even when cancelled.
                await asyncio.shield(asyncio.to_thread(confined.release))
    if pipes.error is not None:
        raise pipes.error
    code = child.returncode
    assert code is not None, "the child was waited for"
    return code if confined is None else exit_code(code)


async def _drain(pipes: Pipes, quiet: float) -> None:
    """After the exit: read on until EOF, while output keeps coming, up to `_DRAIN_CAP` s.

    ``quiet`` seconds without output end it early: a grandchild that holds the pipe and says
    nothing must not keep the run alive.
    """
    deadline = asyncio.get_running_loop().time() + max(quiet, _DRAIN_CAP)
    while not pipes.closed.done():
        seen = pipes.progress
        await asyncio.wait([pipes.closed], timeout=quiet)
        if pipes.backlogged:
            continue  # read but not yet delivered: deliver it all, whatever the cap
        if asyncio.get_running_loop().time() >= deadline:
            return
        if pipes.progress == seen:
            return  # the pipes are quiet: only a silent grandchild holds them


# --- spawning -------------------------------------------------------------------------------


def _command_line(argv: Sequence[str], *, shell: bool) -> list[str]:
    if isinstance(argv, str):
        raise TypeError("argv must be a sequence of strings, not one string")
    if not argv:
        raise ValueError("empty command")
    if shell:
        return ["/bin/sh", "-c", " ".join(argv)]
    return list(argv)


def _launch(
    args: list[str], *, env: Mapping[str, str], cwd: Path, how: DeathSignal
) -> tuple[list[str], Callable[[], None] | None]:
    """The command line to exec and the ``preexec_fn`` that give the child its death signal."""
    if how in ("auto", "guard"):
        run_id = env.get(RUN_ID_VAR)
        if run_id and GUARD.covers(run_id):
            return args, None  # the guard stops the run's processes if we die
        if how == "guard":
            raise OSError(errno.ESRCH, "no guard watches this spawn (no run id, or no guard)")
        how = "setpriv" if _setpriv() else "prctl"
    if how == "off":
        return args, None
    if how == "prctl":
        return args, _death_signal_hook()
    setpriv = _setpriv()
    if setpriv is None:
        raise FileNotFoundError(errno.ENOENT, "no setpriv with --pdeathsig", "setpriv")
    # setpriv would report a missing program as exit 127; raise as a direct exec would.
    _check_program(args[0], env=env, cwd=cwd)
    return [setpriv, "--pdeathsig", "KILL", "--", *args], None


_FOUND: dict[tuple[str, str], str] = {}
"""(program, PATH) -> where `shutil.which` last found it. The check asks only whether the
program is there to exec; while that file still is, one ``access`` says so, instead of a
``stat`` along the PATH (23 us, on the loop, for every spawn)."""
_FOUND_MAX = 256


def _check_program(program: str, *, env: Mapping[str, str], cwd: Path) -> str:
    """Where ``program`` is, as exec would find it; the error exec would give when it is
    not there or not executable."""
    if "/" in program:
        path = Path(cwd, program)  # an absolute program ignores cwd
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return str(path)
    search = env.get("PATH", os.defpath)
    found = _FOUND.get((program, search))
    if found is not None and os.access(found, os.X_OK) and not os.path.isdir(found):
        return found
    found = shutil.which(program, path=search)
    if found is None:
        _FOUND.pop((program, search), None)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if len(_FOUND) < _FOUND_MAX:
        _FOUND[(program, search)] = found
    return found


@functools.cache
def _setpriv() -> str | None:
    """util-linux ``setpriv`` when it knows ``--pdeathsig`` (2.33+), found once."""
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            # Its usage text is compiled in: no need to run it (synchronously) to ask.
            knows = b"--pdeathsig" in f.read(4 * 1024 * 1024)
    except OSError:
        return None
    return path if knows else None


def _death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the spawning thread dies.

    Cost: any ``preexec_fn`` makes CPython fork() instead of vfork(), which copies the page
    tables of the whole orchestrator while the event loop waits, and runs Python in the forked
    child (which CPython calls unsafe when other threads exist). The signal is tied to the
    *thread* that forked, here the event loop's, and is not inherited by grandchildren: those
    die with the group or are found by `sweep_run`.
    """
    prctl = libc_prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the orchestrator died before prctl took effect
            os.kill(os.getpid(), kill)

    return hook
