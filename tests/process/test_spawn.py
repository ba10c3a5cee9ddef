"""The process layer: lines, exits, groups, cancellation, sweeps; no process may outlive a test.

Every child gets a unique ORCHESTRATOR_RUN_ID; the ``run_env`` fixture checks after each test
(by its own /proc scan) that no process carrying it is left, and kills any it finds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import RUN_ID_VAR, fake, is_running, marked_pids, wait_until_gone, wait_until_no_marked
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.process import spawn
from orchestrator.process.group import kill_group, stop_group
from orchestrator.process.lines import LineSplitter, clean_line
from orchestrator.process.orphans import sweep_run
from orchestrator.process.procfs import process_start_time
from orchestrator.process.spawn import DeathSignal, run_streaming

ROOT = Path(__file__).resolve().parents[2]
HANG = 10.0
"""Gross bound that only detects hangs; the scenarios take a fraction of it."""


@dataclass
class RunEnv:
    run_id: str
    env: dict[str, str]


@pytest.fixture
async def run_env() -> AsyncIterator[RunEnv]:
    run_id = f"test-procs-{uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env[RUN_ID_VAR] = run_id
    yield RunEnv(run_id, env)
    left = await wait_until_no_marked(run_id)
    for pid in left:  # do not let one failure leak into the next tests
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert left == [], f"processes outlived the scenario: {left}"


@dataclass
class Lines:
    """An ``on_line`` that records lines and lets a test wait for one."""

    got: list[tuple[str, str]] = field(default_factory=list)
    _waiters: list[tuple[Callable[[str], bool], asyncio.Event]] = field(default_factory=list)

    def __call__(self, stream: str, line: str) -> None:
        self.got.append((stream, line))
        for match, event in self._waiters:
            if match(line):
                event.set()

    async def wait_for(self, text: str) -> None:
        """Until a line equal to ``text`` (or starting with it and a space) has arrived."""

        def match(line: str) -> bool:
            return line == text or line.startswith(text + " ")

        if any(match(line) for _, line in self.got):
            return
        event = asyncio.Event()
        self._waiters.append((match, event))
        async with asyncio.timeout(HANG):
            await event.wait()

    def text(self, stream: str = "stdout") -> list[str]:
        return [line for s, line in self.got if s == stream]

    def pids(self, label: str) -> list[int]:
        return [int(line.split()[1]) for line in self.text() if line.startswith(label + " ")]


async def run(argv: list[str], run_env: RunEnv, lines: Lines, **kwargs: Any) -> int:
    return await run_streaming(argv, cwd=ROOT, env=run_env.env, on_line=lines, **kwargs)


# --- exits and lines ------------------------------------------------------------------------


async def test_returns_the_exit_code_and_tells_stdout_from_stderr(run_env: RunEnv) -> None:
    lines = Lines()
    code = await run(fake("exit_with", 3), run_env, lines)
    assert code == 3
    assert lines.text("stdout") == ["first", "the summary line", "   "]
    assert lines.text("stderr") == ["oops"]


async def test_a_child_killed_by_a_signal_gives_minus_the_signal(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("kill_self"), run_env, lines) == -signal.SIGKILL
    assert lines.text() == ["about to die"]


async def test_the_child_leads_a_session_of_its_own(run_env: RunEnv) -> None:
    seen: list[tuple[int, int, int]] = []

    def on_start(pid: int) -> None:
        seen.append((pid, os.getpgid(pid), os.getsid(pid)))

    await run(fake("sleeper", 0), run_env, Lines(), on_start=on_start)
    [(pid, pgid, sid)] = seen
    assert pgid == pid
    assert sid == pid


async def test_stdin_is_empty_and_cwd_is_as_given(run_env: RunEnv, tmp_path: Path) -> None:
    lines = Lines()
    code = await run_streaming(
        [sys.executable, "-c", "import os, sys; print(repr(sys.stdin.read())); print(os.getcwd())"],
        cwd=tmp_path,
        env=run_env.env,
        on_line=lines,
    )
    assert code == 0
    assert lines.text() == ["''", str(tmp_path)]


async def test_shell_mode_runs_the_command_with_sh(run_env: RunEnv) -> None:
    lines = Lines()
    code = await run(["echo one; echo two >&2;", "exit 4"], run_env, lines, shell=True)
    assert code == 4
    assert lines.got == [("stdout", "one"), ("stderr", "two")]


async def test_a_missing_program_raises_before_on_start(run_env: RunEnv) -> None:
    started: list[int] = []
    with pytest.raises(FileNotFoundError):
        await run(["no-such-program-7f3a"], run_env, Lines(), on_start=started.append)
    assert started == []


async def test_a_last_line_without_a_newline_is_delivered(run_env: RunEnv) -> None:
    lines = Lines()
    argv = [sys.executable, "-c", "import sys; sys.stdout.write('a\\nno newline')"]
    assert await run(argv, run_env, lines) == 0
    assert lines.text() == ["a", "no newline"]


async def test_a_one_megabyte_line_is_truncated_and_the_next_line_survives(
    run_env: RunEnv,
) -> None:
    lines = Lines()
    assert await run(fake("long_line", 1024 * 1024), run_env, lines, max_line=1000) == 0
    long, after = lines.text()
    assert long == "x" * 1000 + f" …[truncated {1024 * 1024 - 1000} bytes]"
    assert after == "after"


async def test_the_default_line_limit_is_64_kib(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("long_line", 1024 * 1024), run_env, lines) == 0
    long, after = lines.text()
    assert long.startswith("x" * 65536 + " …[truncated")
    assert len(long) < 65536 + 40
    assert after == "after"


async def test_binary_garbage_and_invalid_utf8_are_replaced_not_fatal(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("garbage"), run_env, lines) == 0
    out = lines.text()
    assert len(out) == 5
    assert "\ufffd" in out[0]
    assert out[1] == "bad \ufffd\ufffd utf8 \ufffd( end"
    assert out[2] == "nulbytebellback"
    assert out[3] == "caf\u00e9 \u2713"
    assert out[4] == "clean"
    for line in out:
        assert clean_line(line) == line
        line.encode("utf-8")  # valid text, whatever came in


async def test_terminal_escapes_from_a_child_never_get_through(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("ansi"), run_env, lines) == 0
    assert lines.text() == [
        "red and bold green",
        "title",
        "link",
        "cleared",
        "progress 10%progress 100%",
        "tab\tstays",
        "8-bit 31mcsi",
        "bidi evil end",
        "lone esc ",
    ]


async def test_a_flood_of_lines_arrives_complete_and_in_order(run_env: RunEnv) -> None:
    lines = Lines()
    count = 200_000
    assert await run(fake("flood", count), run_env, lines) == 0
    assert lines.text() == [f"line {i}" for i in range(count)]


async def test_a_flood_of_empty_lines_lets_the_event_loop_breathe(run_env: RunEnv) -> None:
    ticks = 0
    seen_at: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def on_line(stream: str, line: str) -> None:
        seen_at.append(ticks)

    count = 300_000  # a few pipe chunks' worth: unbounded, each chunk is one callback
    flood = [sys.executable, "-c", f"import sys; sys.stdout.write('\\n' * {count})"]
    async with asyncio.TaskGroup() as tg:
        tick = tg.create_task(ticker())
        code = await run_streaming(flood, cwd=ROOT, env=run_env.env, on_line=on_line)
        tick.cancel()
    assert code == 0
    assert len(seen_at) == count
    # The loop ran other work at least once per 1024-line batch.
    assert len(set(seen_at)) >= count // 1024


async def test_an_on_line_error_kills_the_child_and_propagates(run_env: RunEnv) -> None:
    def on_line(stream: str, line: str) -> None:
        if line == "ready":
            raise RuntimeError("consumer bug")

    with pytest.raises(RuntimeError, match="consumer bug"):
        async with asyncio.timeout(HANG):
            await run_streaming(fake("sleeper"), cwd=ROOT, env=run_env.env, on_line=on_line)


# --- the line splitter and the cleaner (pure) ---------------------------------------------


def test_line_splitter_stops_after_max_lines_and_resumes_where_it_stopped() -> None:
    out: list[str] = []
    splitter = LineSplitter(out.extend, 10)
    rest = splitter.feed(b"a\nb\nc\nd", 2)
    assert out == ["a", "b"]
    assert rest == b"c\nd"
    assert splitter.feed(rest, 2) == b""
    assert splitter.feed(b"e\nf\n", 2) == b""
    assert splitter.feed(b"\n\n\n", 3) == b""
    assert splitter.feed(b"\n\n\ng", 3) == b"g"
    splitter.flush()
    assert out == ["a", "b", "c", "de", "f", "", "", "", "", "", ""]


def test_line_splitter_hands_over_what_a_chunk_ends_in_one_call() -> None:
    calls: list[list[str]] = []
    splitter = LineSplitter(calls.append, 10)
    splitter.feed(b"a\nb\nc")
    splitter.feed(b"d\n0123456789AB\ne\n")  # a held line, a cut one, a plain one: one call
    splitter.feed(b"f")
    splitter.flush()
    assert calls == [["a", "b"], ["cd", "0123456789 …[truncated 2 bytes]", "e"], ["f"]]


def split(chunks: list[bytes], max_line: int = 10) -> list[str]:
    out: list[str] = []
    splitter = LineSplitter(out.extend, max_line)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.flush()
    return out


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"ab\ncd\n"], ["ab", "cd"]),
        ([b"a", b"b\nc", b"d\n"], ["ab", "cd"]),
        ([b"crlf\r\n"], ["crlf"]),
        ([b"\n\n"], ["", ""]),
        ([b"tail"], ["tail"]),
        ([b""], []),
        ([b"0123456789\n"], ["0123456789"]),
        ([b"0123456789A\n"], ["0123456789 …[truncated 1 bytes]"]),
        ([b"01234", b"56789", b"ABC", b"DE\nok\n"], ["0123456789 …[truncated 5 bytes]", "ok"]),
        ([b"0123456789ABC"], ["0123456789 …[truncated 3 bytes]"]),
        # "é" is two bytes: a character cut by the limit is dropped whole, and counted.
        (["012345678é\n".encode()], ["012345678 …[truncated 2 bytes]"]),
    ],
)
def test_line_splitter(chunks: list[bytes], expected: list[str]) -> None:
    assert split(chunks) == expected


PIECES = [b"\n", b"\r\n", b"ab", b"\xc3\xa9", b"\xe2\x9c\x93", b"\xff", b"\x1b[", b"\t"]
OUTPUT = st.binary(max_size=400) | st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    data=OUTPUT,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    max_lines=st.none() | st.integers(min_value=1, max_value=5),
)
def test_line_splitter_agrees_with_a_plain_split(
    data: bytes, cuts: list[int], max_lines: int | None
) -> None:
    out: list[str] = []
    splitter = LineSplitter(out.extend, 10_000)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        chunk = data[lo:hi]
        while chunk:
            chunk = splitter.feed(chunk, max_lines)
    splitter.flush()
    *lines, last = data.split(b"\n")
    if last:
        lines.append(last)
    assert out == [clean_line(line.decode("utf-8", errors="replace")) for line in lines]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), max_line=st.integers(min_value=1, max_value=20))
def test_line_splitter_bounds_every_line(data: bytes, max_line: int) -> None:
    out: list[str] = []
    splitter = LineSplitter(out.extend, max_line)
    splitter.feed(data)
    splitter.flush()
    assert len(out) == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    for line in out:
        head, _, _ = line.partition(" …[truncated ")
        assert len(head.encode()) <= max_line * 3  # one byte can become U+FFFD (3 bytes)


def test_line_splitter_memory_stays_bounded() -> None:
    out: list[str] = []
    splitter = LineSplitter(out.extend, 100)
    for _ in range(1000):
        splitter.feed(b"y" * 10_000)
        assert len(splitter._buf) <= 100
    splitter.flush()
    assert out == ["y" * 100 + f" …[truncated {10_000_000 - 100} bytes]"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text", "plain text"),
        ("\x1b[38;5;196mcolour\x1b[0m", "colour"),
        ("\x1b[?25lhidden cursor", "hidden cursor"),
        ("\x1b]52;c;Y2xpcA==\x07clipboard", "clipboard"),
        ("\x1bPdcs string\x1b\\after", "after"),
        ("\x1b7saved\x1b8", "saved"),
        ("\x1b(Bcharset", "charset"),
        ("a\x00b\x7fc\x85d", "abcd"),
        ("line\u2028sep\u2029par", "lineseppar"),
        ("keep\ttab", "keep\ttab"),
        ("unicode ✓ é 中文", "unicode ✓ é 中文"),
    ],
)
def test_clean_line(raw: str, clean: str) -> None:
    assert clean_line(raw) == clean


# --- the exit, not the pipes --------------------------------------------------------------


async def test_a_grandchild_holding_stdout_does_not_hang_the_run(run_env: RunEnv) -> None:
    lines = Lines()
    started = time.monotonic()
    code = await run(fake("hold_stdout"), run_env, lines, drain=0.1)
    assert time.monotonic() - started < HANG
    assert code == 0
    assert "parent done" in lines.text()
    [grandchild] = lines.pids("grandchild")
    assert await wait_until_gone(grandchild)


async def test_output_after_the_exit_still_arrives_within_the_drain(run_env: RunEnv) -> None:
    lines = Lines()
    script = "(sleep 0.2; echo late; sleep 0.2; echo later) & echo early"
    assert await run([script], run_env, lines, shell=True, drain=HANG / 2) == 0
    assert lines.text() == ["early", "late", "later"]


async def test_grandchildren_in_the_group_die_when_the_child_exits(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("spawn_tree", "--exit"), run_env, lines) == 0
    grandchildren = lines.pids("grandchild")
    assert len(grandchildren) == 2
    for pid in grandchildren:
        assert await wait_until_gone(pid)


async def test_a_setsid_daemon_escapes_the_group_and_sweep_run_finds_it(run_env: RunEnv) -> None:
    lines = Lines()
    started = time.monotonic()
    code = await run(fake("spawn_tree", "--exit", "--daemon"), run_env, lines, drain=0.1)
    assert time.monotonic() - started < HANG  # the daemon holds stdout too
    assert code == 0
    [daemon] = lines.pids("daemon")
    for pid in lines.pids("grandchild"):
        assert await wait_until_gone(pid)
    assert is_running(daemon), "a setsid'ed daemon is out of the group's reach"
    assert marked_pids(run_env.run_id) == [daemon]

    assert await asyncio.to_thread(sweep_run, run_env.run_id) == [daemon]
    assert await wait_until_gone(daemon)


# --- cancellation -------------------------------------------------------------------------


async def test_cancel_stops_the_whole_group_and_propagates(run_env: RunEnv) -> None:
    lines = Lines()
    pids: list[int] = []
    task = asyncio.create_task(run(fake("spawn_tree"), run_env, lines, on_start=pids.append))
    await lines.wait_for("ready")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [child] = pids
    assert not is_running(child)
    for pid in lines.pids("grandchild"):
        assert await wait_until_gone(pid)
    assert await wait_until_no_marked(run_env.run_id) == []


async def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace(run_env: RunEnv) -> None:
    lines = Lines()
    pids: list[int] = []
    started = time.monotonic()
    task = asyncio.create_task(
        run(fake("ignore_term"), run_env, lines, on_start=pids.append, grace=0.3)
    )
    await lines.wait_for("ready")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < HANG
    assert ("stderr", "term ignored") in lines.got  # SIGTERM came first
    assert not is_running(pids[0])


async def test_a_second_cancel_kills_at_once(run_env: RunEnv) -> None:
    lines = Lines()
    pids: list[int] = []
    task = asyncio.create_task(
        run(fake("ignore_term"), run_env, lines, on_start=pids.append, grace=3600)
    )
    await lines.wait_for("ready")
    task.cancel()
    await lines.wait_for("term ignored")  # now in the hour-long grace period
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert await wait_until_gone(pids[0])


ESCAPING = "setsid sleep 30 & (sleep 30 &); trap '' TERM; echo up; sleep 30"
"""Holds the pipes from outside the group (setsid) and inside it (double fork), ignores TERM."""


@pytest.mark.parametrize("turns", range(8))
async def test_a_cancel_at_any_moment_of_the_spawn_never_waits_for_the_pipes(
    run_env: RunEnv, turns: int
) -> None:
    """CPython 3.11's ``subprocess_exec``, cancelled while connecting the pipes, waited for
    every holder of them; here a cancel in any of the first loop turns stops the group within
    the grace, whatever holds the pipes."""
    lines = Lines()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run([ESCAPING], run_env, lines, shell=True, grace=0.2))
    for _ in range(turns):
        await asyncio.sleep(0)
    started = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(HANG):
            await task
    assert loop.time() - started < HANG
    await asyncio.to_thread(sweep_run, run_env.run_id)  # the setsid one is the sweep's


async def test_a_timeout_from_outside_is_a_cancellation_too(run_env: RunEnv) -> None:
    pids: list[int] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await run(fake("sleeper"), run_env, Lines(), on_start=pids.append, grace=0.2)
    assert not is_running(pids[0])


async def test_twenty_children_run_concurrently(run_env: RunEnv, tmp_path: Path) -> None:
    # Each child signs in, then waits until all twenty have (exit 1 after 30 s if they never
    # do): run one after another, the first would wait alone. No guess at how fast they start.
    barrier = (
        f'touch "{tmp_path}/$$"; n=0; '
        f'until [ "$(ls "{tmp_path}" | wc -l)" -ge 20 ]; do '
        "[ $n -ge 600 ] && exit 1; n=$((n + 1)); sleep 0.05; done"
    )
    codes: list[int] = []

    async def one() -> None:
        codes.append(await run(["sh", "-c", barrier], run_env, Lines()))

    async with asyncio.TaskGroup() as tg:
        for _ in range(20):
            tg.create_task(one())
    assert codes == [0] * 20


# --- stop_group and kill_group --------------------------------------------------------------


async def test_stop_group_is_idempotent_and_fine_after_exit(run_env: RunEnv) -> None:
    proc = await asyncio.create_subprocess_exec(
        *fake("ignore_term"),
        env=run_env.env,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    assert await stop_group(proc, grace=0.2) == -signal.SIGKILL
    assert await stop_group(proc, grace=0.2) == -signal.SIGKILL


async def test_stop_group_ends_a_polite_child_with_sigterm(run_env: RunEnv) -> None:
    proc = await asyncio.create_subprocess_exec(
        *fake("sleeper"), env=run_env.env, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"ready\n"
    assert await stop_group(proc, grace=HANG) == -signal.SIGTERM


def test_kill_group_reports_a_gone_group_without_raising() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    assert kill_group(proc.pid, signal.SIGKILL) is False


@pytest.mark.parametrize("pgid", [0, 1, -5])
def test_kill_group_refuses_groups_that_are_never_a_child(pgid: int) -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_group(pgid, signal.SIGKILL)


def test_kill_group_refuses_our_own_group() -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_group(os.getpgrp(), signal.SIGKILL)


# --- sweep_run ------------------------------------------------------------------------------


async def test_sweep_run_matches_the_run_id_exactly(run_env: RunEnv) -> None:
    other_env = dict(run_env.env)
    other_env[RUN_ID_VAR] = run_env.run_id + "-other"
    other = await asyncio.create_subprocess_exec(
        *fake("sleeper"), env=other_env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        assert await asyncio.to_thread(sweep_run, run_env.run_id) == []
        assert is_running(other.pid)
    finally:
        other.kill()
        await other.wait()


async def test_sweep_run_never_signals_its_caller(run_env: RunEnv) -> None:
    code = (
        "import os; from orchestrator.process.orphans import sweep_run; "
        "print(sweep_run(os.environ['ORCHESTRATOR_RUN_ID']))"
    )
    lines = Lines()
    assert await run([sys.executable, "-c", code], run_env, lines) == 0
    assert lines.text() == ["[]"]


def test_sweep_run_refuses_an_empty_run_id() -> None:
    with pytest.raises(ValueError, match="empty"):
        sweep_run("")


# --- death of the orchestrator --------------------------------------------------------------


HAS_SETPRIV = spawn._setpriv() is not None
needs_setpriv = pytest.mark.skipif(not HAS_SETPRIV, reason="util-linux setpriv not installed")


@pytest.mark.parametrize(
    ("how", "dies"),
    [
        pytest.param("setpriv", True, marks=needs_setpriv),
        ("prctl", True),
        ("auto", True),
        ("off", False),
    ],
)
async def test_the_child_dies_with_a_sigkilled_orchestrator(
    run_env: RunEnv, how: str, dies: bool
) -> None:
    mini = await asyncio.create_subprocess_exec(
        *fake("mini_orchestrator", how), env=run_env.env, stdout=asyncio.subprocess.PIPE
    )
    assert mini.stdout is not None
    async with asyncio.timeout(HANG):
        line = await mini.stdout.readline()
    child = int(line.split()[1])
    mini.kill()
    await mini.wait()
    if dies:
        assert await wait_until_gone(child)
    else:
        await asyncio.sleep(0.3)  # the control case: only a sweep would find it
        assert is_running(child)
        assert await asyncio.to_thread(sweep_run, run_env.run_id) == [child]


@pytest.mark.parametrize("how", [pytest.param("setpriv", marks=needs_setpriv), "prctl", "off"])
async def test_every_launcher_raises_spawn_errors_alike(
    run_env: RunEnv, tmp_path: Path, how: DeathSignal
) -> None:
    not_executable = tmp_path / "agent.sh"
    not_executable.write_text("#!/bin/sh\n")

    async def spawn(argv: list[str], cwd: Path = ROOT) -> int:
        return await run_streaming(argv, cwd=cwd, env=run_env.env, on_line=Lines(), pdeathsig=how)

    with pytest.raises(FileNotFoundError, match="no-such-program-7f3a"):
        await spawn(["no-such-program-7f3a"])
    with pytest.raises(FileNotFoundError):
        await spawn(["./no-such-program-7f3a"])
    with pytest.raises(PermissionError):
        await spawn([str(not_executable)])
    with pytest.raises(PermissionError):
        await spawn(["./agent.sh"], cwd=tmp_path)
    with pytest.raises(PermissionError):
        await spawn([str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        await spawn(["true"], cwd=tmp_path / "missing")


@pytest.mark.parametrize("how", [pytest.param("setpriv", marks=needs_setpriv), "prctl", "off"])
async def test_every_launcher_keeps_argv_and_pid(run_env: RunEnv, how: DeathSignal) -> None:
    lines = Lines()
    pids: list[int] = []
    code = "import os, sys; print(sys.argv[1:]); print(os.getpid())"
    argv = [sys.executable, "-c", code, "a b", "{x}"]
    assert await run(argv, run_env, lines, pdeathsig=how, on_start=pids.append) == 0
    assert lines.text() == ["['a b', '{x}']", str(pids[0])]


async def test_a_shell_keeps_its_argv0_under_setpriv(run_env: RunEnv) -> None:
    if not HAS_SETPRIV:
        pytest.skip("util-linux setpriv not installed")
    lines = Lines()
    assert await run(["sh", "-c", "echo $0"], run_env, lines, pdeathsig="setpriv") == 0
    assert lines.text() == ["sh"]


async def test_set_child_subreaper_adopts_orphans(run_env: RunEnv) -> None:
    lines = Lines()
    assert await run(fake("subreaper_check"), run_env, lines) == 0
    assert lines.text() == ["subreaper True", "adopted True"]


# --- process_start_time ---------------------------------------------------------------------


def test_process_start_time_is_stable_for_a_process() -> None:
    first = process_start_time(os.getpid())
    assert isinstance(first, int)
    assert first > 0
    assert process_start_time(os.getpid()) == first


def test_process_start_time_of_a_gone_process_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_start_time(proc.pid) is None


def test_process_start_time_survives_parentheses_in_the_command_name(tmp_path: Path) -> None:
    odd = tmp_path / "x) (y z"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            assert b"(x) (y z)" in f.read()
        assert process_start_time(proc.pid) == process_start_time(proc.pid)
        assert process_start_time(proc.pid) is not None
    finally:
        proc.communicate(b"")


async def test_many_flooding_children_lose_no_line(tmp_path: Path) -> None:
    """One line budget per loop turn is shared by every pipe: a starved pipe must still
    deliver everything it read, and the run must wait for it, not drop it at exit."""
    counts: dict[int, int] = {}
    script = "import sys\nfor i in range(1500): sys.stdout.write(f'line {i}\\n')\n"

    async def one(n: int) -> int:
        counts[n] = 0

        def on_line(stream: str, line: str) -> None:
            counts[n] += 1
            spin = time.perf_counter() + 0.00003  # a consumer with real work per line
            while time.perf_counter() < spin:
                pass

        return await run_streaming(
            [sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), on_line=on_line
        )

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(n)) for n in range(40)]
    assert [t.result() for t in tasks] == [0] * 40
    assert counts == dict.fromkeys(range(40), 1500)


async def test_run_streaming_takes_exactly_one_line_callback(run_env: RunEnv) -> None:
    """Refused before anything is spawned (the fixture finds no child of the run)."""
    both: dict[str, Any] = {"on_line": lambda s, ln: None, "on_lines": lambda s, ls: None}
    for callbacks in ({}, both):
        with pytest.raises(TypeError, match="one of on_line and on_lines"):
            await run_streaming(["true"], cwd=ROOT, env=run_env.env, **callbacks)


@needs_setpriv  # the check is setpriv's and the sandbox's (a direct exec raises by itself)
async def test_a_program_found_once_is_checked_where_it_was_and_looked_for_again_once_gone(
    run_env: RunEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before each spawn (is the program on PATH?) looks along the PATH once; then
    the file it found answers, until it is gone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "tool-5c1e"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o755)
    env = {**run_env.env, "PATH": f"{bin_dir}:{run_env.env.get('PATH', os.defpath)}"}
    looked: list[str] = []
    real_which = shutil.which

    def which(cmd: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        looked.append(cmd)
        return real_which(cmd, mode, path)

    monkeypatch.setattr(shutil, "which", which)
    for _ in range(3):
        lines = Lines()
        code = await run_streaming(
            ["tool-5c1e"], cwd=ROOT, env=env, on_line=lines, pdeathsig="setpriv"
        )
        assert code == 0
        assert lines.text() == ["ran"]
    assert looked.count("tool-5c1e") == 1
    program.unlink()
    with pytest.raises(FileNotFoundError, match="tool-5c1e"):
        await run_streaming(["tool-5c1e"], cwd=ROOT, env=env, on_line=Lines(), pdeathsig="setpriv")
    assert looked.count("tool-5c1e") == 2
