"""The escape corpus under every ending: in a sandbox, nothing an agent started survives.

Each run's agents start the whole corpus (`tests/fakes/escapes.py`: TERM-ignorers, ``setsid``
grandchildren, double-fork ``env -i`` daemons, fork-and-exit hoppers, 200-child bursts,
stdout holders). Their processes are found by a nonce in their command line, not by the
run's environment marker (the ``env -i`` daemon has none). A control run without the
sandbox shows the corpus does escape there: the tests can fail.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import Fleet, poll
from fakes import kill_with_groups

from orchestrator.sandbox.support import probe

FAKE = Path(__file__).parent.parent / "fakes" / "escapes.py"
CORPUS = ("ignore-term", "setsid", "daemon", "hopper", "burst", "hold-stdout")
UP = 1 + 2 + 1 + 1 + 200 + 1
"""Processes with the nonce that one agent running the whole corpus holds once ready
(the hopper's current generation counted once)."""

needs_bwrap = pytest.mark.skipif(
    not probe().can_sandbox, reason="this machine cannot make a sandbox (bwrap)"
)
pytestmark = [needs_bwrap, pytest.mark.timeout(90)]


NONCES: list[str] = []
"""Every nonce this module handed out: what its teardown kills, whatever a test left."""


def nonce() -> str:
    NONCES.append(f"7200.{random.randrange(10**9):09d}")
    return NONCES[-1]


@pytest.fixture(scope="module", autouse=True)
def nothing_outlives_the_module() -> Iterator[None]:
    """A test that failed (or was cut off by its timeout) before its own cleanup must not
    leave a hopper forking for the rest of the suite: on CI that load slowed every later test."""
    yield
    for n in NONCES:
        kill_all(n)


def with_nonce(n: str) -> list[int]:
    """Live processes whose command line holds ``n`` (zombies excluded)."""
    found = []
    needle = n.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def kill_all(n: str) -> None:
    """Kill the corpus, each process with its whole group (`kill_with_groups`): the hopper
    keeps changing pid, and on a loaded machine a scan is slower than its next fork (killed
    pid by pid, it survived 20 rounds)."""
    for _ in range(50):
        pids = with_nonce(n)
        if not pids:
            return
        kill_with_groups(pids)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def corpus_task(tid: str, n: str, *, then: str = "wait", **kw: Any) -> dict[str, Any]:
    argv = [sys.executable, str(FAKE), n, *CORPUS, "--then", then]
    return {"id": tid, "agent": "command", "command": argv, **kw}


def up(fleet: Fleet, n: str, agent: str = "a") -> None:
    progress = fleet.responses / f"{agent}.md"
    poll(lambda: progress.exists() and "| ready" in progress.read_text(), what="the corpus")
    poll(lambda: len(with_nonce(n)) >= UP, timeout=20, what="the corpus's processes")


def none_left(n: str) -> list[int]:
    """Processes of the corpus still alive once the ending has run its course."""
    try:
        poll(lambda: not with_nonce(n), timeout=5, what="the corpus to be gone")
    except AssertionError:
        left = with_nonce(n)
        kill_all(n)
        return left
    return []


def test_normal_end(fleet: Fleet) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n, then="exit"))
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 0, done.text
    assert none_left(n) == []


def test_cancel(fleet: Fleet) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n))
    run = fleet.start("run", "plan.yaml", "--no-live")
    up(fleet, n)
    assert fleet.cli("cancel", "a").code == 0
    assert fleet.finish(run, timeout=60).code == 1
    assert none_left(n) == []


def test_timeout(fleet: Fleet) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n, timeout=3))
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 1
    assert fleet.journal().agents["a"]["state"] == "timed_out"
    assert none_left(n) == []


def test_stall(fleet: Fleet) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n, stall_timeout=3))
    done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
    assert done.code == 1
    assert fleet.journal().agents["a"]["state"] == "timed_out"
    assert none_left(n) == []


def test_sigterm_of_the_orchestrator(fleet: Fleet) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n))
    run = fleet.start("run", "plan.yaml", "--no-live")
    up(fleet, n)
    run.send_signal(signal.SIGTERM)
    assert fleet.finish(run, timeout=60).code == 143
    assert none_left(n) == []


@pytest.mark.parametrize("after", ["status", "resume"])
def test_sigkill_of_the_orchestrator(fleet: Fleet, after: str) -> None:
    n = nonce()
    fleet.plan(corpus_task("a", n))
    run = fleet.start("run", "plan.yaml", "--no-live")
    up(fleet, n)
    run.kill()
    run.wait()
    # Nothing to sweep: the sandbox died with its orchestrator, before anyone looked.
    assert none_left(n) == []
    if after == "status":
        shown = fleet.cli("status")
        assert shown.code == 0
        assert "stopped what its agents left" not in shown.err
    else:
        fleet.plan(corpus_task("a", n, then="exit"))
        resumed = fleet.cli("run", "plan.yaml", "--no-live", "--resume", timeout=60)
        assert resumed.code == 0, resumed.text
        assert none_left(n) == []


def test_without_the_sandbox_the_corpus_escapes_a_normal_end(fleet: Fleet) -> None:
    """The control: the same agent unconfined leaves the ``env -i`` daemon behind."""
    n = nonce()
    fleet.plan(corpus_task("a", n, then="exit"), sandbox="off")
    try:
        done = fleet.cli("run", "plan.yaml", "--no-live", timeout=60)
        assert done.code == 0, done.text
        assert with_nonce(n), "unconfined, the daemon without markers outlives the run"
    finally:
        kill_all(n)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(10))
@pytest.mark.parametrize("ending", ["normal", "sigkill"])
def test_soak_nothing_survives(fleet: Fleet, ending: str, attempt: int) -> None:
    """The adversarial pass's numbers (10 of 10 daemons, 15 of 25 hoppers survived) are
    tries: here every try must hold."""
    n = nonce()
    if ending == "normal":
        fleet.plan(corpus_task("a", n, then="exit"))
        assert fleet.cli("run", "plan.yaml", "--no-live", timeout=60).code == 0
    else:
        fleet.plan(corpus_task("a", n))
        run = fleet.start("run", "plan.yaml", "--no-live")
        up(fleet, n)
        run.kill()
        run.wait()
    assert none_left(n) == []
