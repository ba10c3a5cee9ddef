"""Sandboxes started ahead: bubblewrap's outermost process, already in a fresh cgroup,
waiting for its command line.

Why: moving a process into a cgroup (cgroup v1, and v2 without ``favordynmods``) waits for
an RCU grace period unless another move happened a few milliseconds before: 8-16 ms on the
kernels measured, in the way of every sandboxed agent's start, whose first process must be
counted before it runs anything (B13). A warm sandbox is a ``bash`` started ahead (in a
session of its own, as every spawn) and moved into its cgroup in a thread, off every agent's
path. A spawn hands it bubblewrap's command line (``--`` and the command on one pipe, read by
``mapfile``; the options on another, which bubblewrap reads at once: ``--args``) and it
execs bubblewrap: every process of the sandbox is born in the cgroup, so the agent's start
moves nothing and waits for no grace period, and the fork was done ahead too.

`WARM` holds the run's `WarmSandboxes` (the runner sets it for the run's tasks); spawns
outside a run take the usual path. ``ahead`` entries are kept per kind of spawn (the same
bubblewrap, cgroup limits and run markers). An entry never taken ends when its command pipe
closes: `close` at the run's end, or the kernel when the orchestrator dies (``mapfile``
reads an end of file, ``exec`` of nothing returns, ``bash`` exits), so nothing started
ahead outlives the run. Entries carry the run's markers, so sweeps find them too.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.process.orphans import SPAWNED
from orchestrator.process.procfs import OUTER_RUNS_VAR, RUN_ID_VAR
from orchestrator.sandbox.bwrap import Ahead, Sandboxed, wants_cgroup
from orchestrator.sandbox.bwrap import sandbox as confine
from orchestrator.sandbox.cgroups import AgentCgroup, open_agent
from orchestrator.sandbox.confinement import Confinement

AHEAD = 2
"""Sandboxes kept started per kind of spawn."""
REFILL_AFTER = 0.01
"""Seconds after a spawn took one before the next is started: a fork and a shell's start
that would compete for the CPU with the spawn's own start (bubblewrap's, a few ms) wait
until it is under way."""
_MARKERS = (RUN_ID_VAR, OUTER_RUNS_VAR)
_F_GETPIPE_SZ = 1032
_BWRAP_MAX_ARGS = 9000 - 10
"""bubblewrap's own cap on the arguments it parses (``MAX_ARGS``), less those in its argv."""

Key = tuple[object, ...]


@dataclass(slots=True, eq=False)
class Started:
    """One sandbox started ahead: its process (a session of its own), its output pipes and
    the pipe its command line goes to."""

    proc: subprocess.Popen[bytes]
    fds: dict[int, int]
    """Our read ends of its stdout (1) and stderr (2)."""
    options: int
    """Where bubblewrap's options go (read at once by bubblewrap: ``--args``)."""
    command: int
    """Where ``--`` and the command go (read by ``mapfile``, a byte at a time: a pipe)."""
    info: int
    info_child: int
    cgroup: AgentCgroup | None = None

    @property
    def ahead(self) -> Ahead:
        return Ahead(self.cgroup, self.info, self.info_child)

    def launch(self, argv: list[str], options: int) -> bool:
        """Hand it bubblewrap's command line, ``argv[1:options]`` being the options; False
        (and nothing ran) when it cannot take it whole: it died, or it does not fit at once."""
        if options > _BWRAP_MAX_ARGS:  # bubblewrap refuses more from ``--args``
            return False
        given = [_nul_separated(argv[1:options]), _nul_separated(argv[options:])]
        try:
            for fd, data in zip((self.options, self.command), given, strict=True):
                if len(data) > fcntl.fcntl(fd, _F_GETPIPE_SZ):  # never half a command line
                    return False
            for fd, data in zip((self.options, self.command), given, strict=True):
                if os.write(fd, data) != len(data):
                    return False
        except OSError:  # it is gone
            return False
        for fd in (self.options, self.command):
            os.close(fd)
        self.options = self.command = -1
        return True

    def kill(self) -> None:
        """SIGKILL its session before its command pipe closes: it must not run a part of a
        command line. Its own pipes are closed; it is still to be reaped."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # not reaped yet: the pid is its own
            except ProcessLookupError:
                pass
        for fd in (self.options, self.command, self.info, *self.fds.values()):
            if fd >= 0:
                os.close(fd)
        self.options = self.command = self.info = -1
        self.fds = {}

    def reap(self) -> None:
        """Wait for it (after `kill`: at once) and remove its cgroup. Synchronous."""
        self.proc.wait()
        SPAWNED.discard(self.proc.pid)
        if self.cgroup is not None:
            self.cgroup.remove()


WARM: contextvars.ContextVar[WarmSandboxes | None] = contextvars.ContextVar("warm", default=None)


class WarmSandboxes:
    """The run's sandboxes started ahead; `take` one per sandboxed spawn, `close` at the end."""

    def __init__(self, ahead: int = AHEAD) -> None:
        self._ahead = ahead
        self._ready: dict[Key, list[Started]] = {}
        self._filling: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._broken: set[Key] = set()
        self._closed = False
        self._bash = shutil.which("bash")
        self.taken = 0
        """How many spawns ran in a sandbox started ahead (for the benchmark and tests)."""

    def take(self, conf: Confinement, env: Mapping[str, str]) -> Started | None:
        """A ready sandbox for a spawn under ``conf`` with ``env``, or None (the spawn starts
        its own); either way more are started for the next spawns."""
        if self._closed or self._bash is None:
            return None
        key = _key(conf, env)
        got = None
        ready = self._ready.get(key, [])
        while ready and got is None:
            entry = ready.pop()
            if entry.proc.poll() is None:
                got = entry
            else:  # killed while it waited: it never ran anything
                self.discard(entry)
        self._top_up(key, conf, env, after=REFILL_AFTER)
        return got

    async def fill(self, conf: Confinement, env: Mapping[str, str]) -> None:
        """Start what spawns under ``conf`` with ``env`` will take, and wait until it is ready
        (`take` does the same without waiting)."""
        if self._closed or self._bash is None:
            return
        self._top_up(_key(conf, env), conf, env, after=0.0)
        if self._tasks:  # the ones started before too
            await asyncio.wait(set(self._tasks))

    def _top_up(self, key: Key, conf: Confinement, env: Mapping[str, str], *, after: float) -> None:
        if key in self._broken:
            return
        markers = {k: env[k] for k in _MARKERS if k in env}
        more = self._ahead - len(self._ready.get(key, [])) - self._filling.get(key, 0)
        for _ in range(more):
            self._filling[key] = self._filling.get(key, 0) + 1
            fill = self._fill(key, conf, markers, after=after)
            task = asyncio.get_running_loop().create_task(fill)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fill(
        self, key: Key, conf: Confinement, markers: dict[str, str], *, after: float
    ) -> None:
        entry: Started | None = None
        ready = False
        try:
            assert self._bash is not None
            await asyncio.sleep(after)
            entry = _start(self._bash, conf.bwrap, markers)
            if wants_cgroup(conf):
                joining = asyncio.ensure_future(asyncio.to_thread(_join, entry, conf))
                try:
                    await asyncio.shield(joining)
                finally:  # cancelled (`close`): the thread still writes; let it finish first
                    if not joining.done():
                        await asyncio.wait([joining])
                    if not joining.cancelled():
                        joining.exception()
            ready = not self._closed
        except (OSError, subprocess.SubprocessError):
            self._broken.add(key)  # spawns take their usual path, which reports the cause
        finally:
            self._filling[key] -= 1
            if entry is not None and not ready:
                entry.kill()
                await asyncio.to_thread(entry.reap)
        if entry is not None and ready:
            self._ready.setdefault(key, []).append(entry)

    def discard(self, entry: Started) -> None:
        """End a sandbox taken but not used (it died, or its command line did not fit)."""
        entry.kill()
        self.later(entry.reap)

    def later(self, call: Callable[[], None]) -> None:
        """``call`` in a thread, off the spawn's path; `close` waits for it. For a spawn's
        clean-up once its processes are gone: an ``rmdir`` of its cgroup waits for the
        kernel (2-9 ms on the kernels measured), its temp directory's for the disk."""
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(call))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """End every sandbox not taken (and the ones being started) and remove their cgroups."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if pending := self._tasks | self._background:  # a removal is not cancelled: waited for
            await asyncio.wait(pending)
        left = [e for ready in self._ready.values() for e in ready]
        self._ready.clear()
        for entry in left:
            entry.kill()
        if left:
            await asyncio.to_thread(_reap_all, left)


def launch_ahead(
    conf: Confinement, argv: list[str], *, cwd: Path, env: Mapping[str, str]
) -> tuple[Sandboxed, Started] | None:
    """Spawn ``argv`` confined through a sandbox the run started ahead, when it has one
    ready: the sandbox's resources and the started process, now running it. None when not
    (no `WARM` set, none ready, or it could not take the command line): spawn as usual."""
    warm = WARM.get()
    started = warm.take(conf, env) if warm is not None else None
    if warm is None or started is None:
        return None
    try:
        confined = confine(conf, argv, cwd=cwd, env=env, ahead=started.ahead)
    except BaseException:
        warm.discard(started)
        raise
    started.info = -1  # the sandbox's now: read for its init, closed on its release
    if not started.launch(confined.argv, confined.options):  # it died, or the line is too long
        warm.discard(started)
        confined.cgroup = None  # the started process's: removed once it is reaped
        confined.release()
        return None
    warm.taken += 1
    return confined, started


def _reap_all(entries: list[Started]) -> None:
    for entry in entries:
        entry.reap()


def _key(conf: Confinement, env: Mapping[str, str]) -> Key:
    limits = (conf.cgroups, conf.memory, conf.pids) if wants_cgroup(conf) else ()
    return (conf.bwrap, *limits, *(env.get(k) for k in _MARKERS))


def _start(bash: str, bwrap: str, markers: dict[str, str]) -> Started:
    """Start one: ``bash``, which reads ``--`` and the command from one pipe and then execs
    bubblewrap, which reads its options from another (``--args``).
    Synchronous (fork and exec), on the loop's thread: bubblewrap's ``--die-with-parent``
    ties the sandbox to the thread that started this process."""
    command_r, command_w = os.pipe()
    options_r, options_w = os.pipe()
    info, info_child = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    c = command_r
    script = (
        f'mapfile -d "" -t a <&{c} && [ ${{#a[@]}} -gt 0 ] && '
        f'exec {shlex.quote(bwrap)} --args {options_r} "${{a[@]}}" {c}<&-'
    )
    try:
        proc = subprocess.Popen(
            [bash, "--noprofile", "--norc", "-c", script, "warm"],
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd="/",
            env=markers,
            start_new_session=True,
            pass_fds=(command_r, options_r, info_child),
        )
    except BaseException:
        for fd in (command_w, options_w, info, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (command_r, options_r, info_child, out_w, err_w):
            os.close(fd)
    SPAWNED.add(proc.pid)  # before any await: the orphan reaper must leave it to us
    return Started(proc, {1: out_r, 2: err_r}, options_w, command_w, info, info_child)


def _nul_separated(args: list[str]) -> bytes:
    return "".join(a + "\0" for a in args).encode()


def _join(entry: Started, conf: Confinement) -> None:
    """Put the started process into a fresh cgroup of its own (the slow part: in a thread)."""
    assert conf.cgroups is not None
    entry.cgroup = open_agent(conf.cgroups, memory=conf.memory, pids=conf.pids)
    for procs in entry.cgroup.procs:
        procs.write_text(str(entry.proc.pid))
