"""Fake programs for the process-layer tests, and helpers to run them and find their leftovers.

Each ``*.py`` here is a small executable program with one hostile or plain behaviour. Tests run
them as ``[sys.executable, path, ...]`` (the shebang is for running them by hand).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.events import AgentEvent, Blocked, Failed, Finished, Output

FAKES = Path(__file__).resolve().parent
RUN_ID_VAR = "ORCHESTRATOR_RUN_ID"
LEAK_AFTER = 5.0
"""Seconds after which a process still carrying a test's marker counts as leaked."""


def fake(name: str, *args: object) -> list[str]:
    """The argv that runs fake program ``name`` with ``args``."""
    return [sys.executable, str(FAKES / f"{name}.py"), *(str(a) for a in args)]


def _environs() -> Iterator[tuple[int, list[bytes]]]:
    """Every other process's pid and environment entries (those that vanish are skipped)."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                yield int(name), f.read().split(b"\0")
        except OSError:
            continue


def marked_pids(run_id: str, *, var: str = RUN_ID_VAR) -> list[int]:
    """Live processes whose environment holds ``ORCHESTRATOR_RUN_ID=<run_id>`` (our own scan).

    Zombies have an empty environ and do not count: they are dead, only not yet reaped.
    """
    marker = f"{var}={run_id}".encode()
    return [pid for pid, entries in _environs() if marker in entries]


def leftover_run_processes(within: Path) -> list[int]:
    """Live processes carrying some run's marker other than the one this process was
    started under (the suite may itself run inside an agent), of this suite's runs only:
    working in ``within`` (the session's temporary directory) or naming it in their
    environment (a run's control socket). Another suite on this machine, or a user's own
    run, is not this suite's to kill: killing every marked process once made a second
    suite's agents vanish mid-run (``lost``)."""
    prefix = f"{RUN_ID_VAR}=".encode()
    own = os.environ.get(RUN_ID_VAR)
    mine = f"{RUN_ID_VAR}={own}".encode() if own else None
    return [
        pid
        for pid, entries in _environs()
        if any(e.startswith(prefix) and e != mine for e in entries)
        and _belongs(pid, entries, within)
    ]


def _belongs(pid: int, entries: list[bytes], within: Path) -> bool:
    """Whether process ``pid`` works in ``within`` or names it in its environment."""
    top = str(within).encode()
    if any(top + b"/" in e for e in entries):
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return False  # gone, or not ours to look at
    return cwd == str(within) or cwd.startswith(f"{within}/")


def kill_with_groups(pids: list[int]) -> None:
    """SIGKILL each process and its whole group (one atomic kill, which a process that keeps
    forking cannot outrun), never the caller's own group."""
    own = os.getpgrp()
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group not in (own, 0, 1):
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


async def wait_until_no_marked(run_id: str) -> list[int]:
    """Poll until no process carries the marker; the survivors after `LEAK_AFTER` seconds.

    SIGKILL takes effect asynchronously, so a process signalled a moment ago may still be
    listed; a leak is one that is still there seconds later.
    """
    try:
        async with asyncio.timeout(LEAK_AFTER):
            while marked_pids(run_id):
                await asyncio.sleep(0.02)
    except TimeoutError:
        pass
    return marked_pids(run_id)


async def wait_until_gone(pid: int) -> bool:
    """Poll until ``pid`` no longer runs (gone or a zombie); False if it still runs after
    `LEAK_AFTER` seconds."""
    try:
        async with asyncio.timeout(LEAK_AFTER):
            while is_running(pid):
                await asyncio.sleep(0.02)
    except TimeoutError:
        return False
    return True


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@dataclass
class Recorder:
    """Records what an agent emits and which pids it registers; lets a test wait for an event."""

    events: list[AgentEvent] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    hang: float = 10.0
    """Gross bound on a wait: it only detects hangs."""
    _waiters: list[tuple[Callable[[AgentEvent], bool], asyncio.Event]] = field(default_factory=list)

    def emit(self, event: AgentEvent) -> None:
        self.events.append(event)
        for match, flag in self._waiters:
            if match(event):
                flag.set()

    async def wait_for(self, match: Callable[[AgentEvent], bool]) -> None:
        if any(match(e) for e in self.events):
            return
        flag = asyncio.Event()
        self._waiters.append((match, flag))
        async with asyncio.timeout(self.hang):
            await flag.wait()

    def of(self, kind: type) -> list[AgentEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def terminal(self) -> list[AgentEvent]:
        return [e for e in self.events if isinstance(e, Finished | Failed | Blocked)]

    def lines(self, stream: str = "stdout") -> list[str]:
        return [e.line for e in self.events if isinstance(e, Output) and e.stream == stream]
