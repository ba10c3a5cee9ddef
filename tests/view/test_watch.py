"""`watch`: a live dashboard drawn from the journal, in another terminal.

In process, the test writes the journal itself (as an orchestrator would) and reads what
`watch_run` draws on a terminal-like console; end to end, `orchestrator watch` runs on a
pseudo-terminal beside a real run.
"""

from __future__ import annotations

import asyncio
import io
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import ORCH, Fleet, quiet_env, task
from rich.console import Console

from orchestrator.records.journal import Journal
from orchestrator.records.rundir import RunDir, RunLock
from orchestrator.view.watch import watch_run


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=140, color_system=None), out


async def until_drawn(out: io.StringIO, text: str, *, since: int) -> float:
    """Seconds until ``text`` was drawn after offset ``since`` of the output (5 s at most)."""
    t0 = time.monotonic()
    async with asyncio.timeout(5):
        while text not in out.getvalue()[since:]:
            await asyncio.sleep(0.002)
    return time.monotonic() - t0


async def test_a_journal_change_is_on_screen_within_a_fraction_of_a_second(
    tmp_path: Path,
) -> None:
    rundir = RunDir(tmp_path / "agent-responses")
    lock = RunLock(rundir)
    lock.acquire()  # an orchestrator is alive
    journal = Journal(rundir.journal, fresh=True)
    journal.record("run", run_id="r1", plan="demo", state="running", pid=os.getpid())
    journal.record("agent", id="alpha", task="alpha", kind="scripted", state="running",
                   started=time.time())  # fmt: skip
    console, out = terminal()
    try:
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch_run(rundir.responses, console=console))
            await until_drawn(out, "alpha", since=0)
            delays = []
            for n, state in enumerate(("blocked", "succeeded")):
                mark = len(out.getvalue())
                journal.record("agent", id=f"beta{n}", state=state, started=time.time())
                delays.append(await until_drawn(out, f"beta{n}", since=mark))
            journal.record("agent", id="alpha", state="succeeded", ended=time.time())
            journal.record("run", state="finished", ended=time.time())
            await asyncio.wait_for(watcher, timeout=5)
    finally:
        journal.close()
        lock.release()
    assert max(delays) < 1.0, delays  # the bench measures the real figure (POLL is 50 ms)
    final = out.getvalue()
    assert "demo" in final
    assert "succeeded" in final


async def test_watch_of_a_run_whose_orchestrator_died_draws_once_and_returns(
    tmp_path: Path,
) -> None:
    rundir = RunDir(tmp_path / "agent-responses")
    rundir.ensure()
    journal = Journal(rundir.journal, fresh=True)
    journal.record("run", run_id="r1", plan="crashed", state="running", pid=1)
    journal.record("agent", id="alpha", state="running", started=time.time())
    journal.close()
    console, out = terminal()
    await asyncio.wait_for(watch_run(rundir.responses, console=console), timeout=5)
    assert "alpha" in out.getvalue()


def test_watch_without_any_run_exits_2(fleet: Fleet) -> None:
    done = fleet.cli("watch", timeout=10)
    assert done.code == 2
    assert "no run recorded" in done.err
    assert "Traceback" not in done.text


def read_pty(fd: int, buf: bytearray, until: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while until not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return until in buf
            if not chunk:
                return until in buf
            buf += chunk
    return True


def test_watch_in_a_terminal_follows_a_live_run_to_its_end(fleet: Fleet) -> None:
    fleet.plan(
        task("gated", {"say": "waiting"}, {"run": "while [ ! -e go ]; do sleep 0.02; done"}),
        task("then", {"say": "after the gate"}, deps=("gated",)),
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("gated")
    primary, secondary = pty.openpty()
    watcher = subprocess.Popen(
        [*ORCH, "watch"],
        cwd=fleet.cwd,
        env=quiet_env(COLUMNS="140", LINES="40", TERM="xterm"),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    screen = bytearray()
    try:
        assert read_pty(primary, screen, b"running", timeout=10), screen.decode(errors="replace")
        assert b"gated" in screen
        mark = len(screen)
        (fleet.workspace / "go").touch()
        assert watcher.wait(timeout=15) == 0
        read_pty(primary, screen, b"\0", timeout=0.5)  # whatever is left to read
        tail = screen[mark:].decode(errors="replace")
        assert "succeeded" in tail
        assert "then" in tail
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(primary)
    assert fleet.finish(run).code == 0
