"""The scheduler: dependency order, parallelism, limits, monitors, cancellation, timeouts."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import processes_with_marker, scripted, sleeper

from orchestrator.engine.scheduler import Run
from orchestrator.errors import UnknownAgentError
from orchestrator.plan.model import Block, Fail, Say, Sleep, Write
from orchestrator.plan.model import Run as RunStep

MakeRun = Callable[..., Run]


async def test_a_task_starts_when_its_own_dependency_is_done_not_its_wave(
    make_run: MakeRun,
) -> None:
    run = make_run(sleeper("a", 0.05), sleeper("slow", 1.0), sleeper("b", 0.05, deps=("a",)))
    await run.execute()
    b, slow = run.agents["b"], run.agents["slow"]
    assert b.started is not None
    assert slow.ended is not None
    assert b.started < slow.ended
    assert run.exit_code() == 0


async def test_batch_mode_waits_for_the_slowest_of_the_wave(make_run: MakeRun) -> None:
    run = make_run(
        sleeper("a", 0.05), sleeper("slow", 0.5), sleeper("b", 0.05, deps=("a",)), mode="batch"
    )
    await run.execute()
    b, slow = run.agents["b"], run.agents["slow"]
    assert b.started is not None
    assert slow.ended is not None
    assert b.started >= slow.ended
    assert run.exit_code() == 0


async def test_a_failure_skips_its_dependents_and_independent_work_goes_on(
    make_run: MakeRun,
) -> None:
    run = make_run(
        scripted("bad", Fail("broken")),
        scripted("child", deps=("bad",)),
        scripted("grandchild", deps=("child",)),
        sleeper("other", 0.1),
    )
    await run.execute()
    assert run.tasks["bad"].state == "failed"
    assert run.tasks["child"].state == "skipped"
    assert run.tasks["child"].reason == "dependency bad ended failed"
    assert run.tasks["grandchild"].state == "skipped"
    assert run.tasks["other"].state == "succeeded"
    assert run.exit_code() == 1


async def test_max_concurrency_holds_when_sampled_live(make_run: MakeRun) -> None:
    run = make_run(*(sleeper(f"t{i}", 0.05) for i in range(12)), max_concurrency=3)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(a.state == "running" for a in run.agents.values()))
            await asyncio.sleep(0.005)

    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(sample())
        await run.execute()
        sampler.cancel()
    assert peak == 3
    assert run.governor.peak_running == 3
    assert all(t.state == "succeeded" for t in run.tasks.values())


async def test_max_agents_denies_further_spawns_with_a_reason(make_run: MakeRun) -> None:
    run = make_run(*(scripted(f"t{i}") for i in range(8)), max_agents=5)
    await run.execute()
    assert len(run.agents) == 5
    denied = [t for t in run.tasks.values() if t.state == "skipped"]
    assert len(denied) == 3
    assert all("max_agents=5" in t.reason for t in denied)
    assert run.exit_code() == 1


async def test_spawn_rate_bounds_starts_in_every_window(make_run: MakeRun) -> None:
    # a token bucket: at most burst + rate * window starts in any window of time
    rate, burst = 5.0, 5.0
    run = make_run(*(scripted(f"t{i}") for i in range(10)), max_concurrency=1, spawn_rate=rate)
    await run.execute()
    starts = sorted(a.started or 0 for a in run.agents.values())
    assert len(starts) == 10
    for i, j in itertools.combinations(range(len(starts)), 2):
        assert j - i + 1 <= burst + rate * (starts[j] - starts[i]) + 1e-6
    assert starts[-1] - starts[0] >= (10 - burst) / rate - 0.05


async def test_max_depth_zero_still_runs_plan_tasks(make_run: MakeRun) -> None:
    run = make_run(scripted("a"), max_depth=0)
    await run.execute()
    assert run.tasks["a"].state == "succeeded"


async def test_cancel_one_agent_leaves_the_others_running(
    make_run: MakeRun, workspace: Path
) -> None:
    held = RunStep("while [ ! -e go ]; do sleep 0.02; done")  # until the test says go
    run = make_run(
        sleeper("victim", 30), scripted("other", held), scripted("after", deps=("victim",))
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        while "victim" not in run.agents or "other" not in run.agents:
            await asyncio.sleep(0.01)
        assert run.cancel("victim") == ["victim"]
        assert run.cancel("victim") == []  # idempotent
        assert await run.wait("victim") == "cancelled"
        assert run.agents["other"].state == "running"
        await asyncio.to_thread((workspace / "go").touch)
    assert run.tasks["other"].state == "succeeded"
    assert run.tasks["after"].state == "skipped"
    assert run.exit_code() == 1


async def test_cancel_stops_the_agents_process_group(make_run: MakeRun) -> None:
    run = make_run(scripted("sh", RunStep("sleep 30 & sleep 30; wait")))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        while not processes_with_marker(run.settings.run_id):
            await asyncio.sleep(0.01)
        run.cancel("sh")
        assert await run.wait("sh") == "cancelled"
    assert processes_with_marker(run.settings.run_id) == []


async def test_timeout_and_stall_end_as_timed_out_with_the_reason(make_run: MakeRun) -> None:
    run = make_run(
        sleeper("slow", 30, timeout=0.2),
        scripted("quiet", Say("one"), Sleep(30), stall_timeout=1),
        # talks every 0.1 s for 3 s: longer than its stall timeout, never silent for it (1 s,
        # not less: a loaded machine's loop can lag for several tenths of a second)
        scripted(
            "trickle", *(s for _ in range(30) for s in (Say("."), Sleep(0.1))), stall_timeout=1
        ),
    )
    await run.execute()
    assert run.agents["slow"].state == "timed_out"
    assert run.agents["slow"].reason == "timed out after 0.2s"
    assert run.agents["quiet"].state == "timed_out"
    assert run.agents["quiet"].reason == "stalled: no output for 1s"
    assert run.agents["trickle"].state == "succeeded"


async def test_wait_any_and_peek(make_run: MakeRun, workspace: Path) -> None:
    held = RunStep("while [ ! -e go ]; do sleep 0.02; done")  # until the test says go
    run = make_run(sleeper("fast", 0.05), scripted("slow", held))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run.execute())
        assert run.peek("slow").state in ("pending", "running")
        first, state = await run.wait_any(["slow", "fast"])
        assert (first, state) == ("fast", "succeeded")
        assert run.peek("fast").last_lines[-1] == "finished: fast done"
        with pytest.raises(UnknownAgentError):
            run.peek("nope")
        await asyncio.to_thread((workspace / "go").touch)
    assert await run.wait("slow") == "succeeded"


async def test_an_agent_crash_becomes_a_failed_state(make_run: MakeRun, workspace: Path) -> None:
    run = make_run(scripted("w", Write("../escape.txt", "x")), scripted("ok"))
    await run.execute()
    assert run.agents["w"].state == "failed"
    assert "escape" in run.agents["w"].reason
    assert not (workspace.parent / "escape.txt").exists()
    assert run.tasks["ok"].state == "succeeded"


async def test_blocked_agent_ends_blocked_with_its_reason(make_run: MakeRun) -> None:
    run = make_run(scripted("b", Say("looking"), Block("need the schema")))
    await run.execute()
    assert run.agents["b"].state == "blocked"
    assert run.agents["b"].reason == "need the schema"


async def test_progress_file_golden(make_run: MakeRun, responses: Path, workspace: Path) -> None:
    run = make_run(
        scripted(
            "golden",
            Say("Creating the layout"),
            Write("pkg/__init__.py", "x = 1\n"),
            RunStep("echo hello; echo oops >&2"),
        )
    )
    await run.execute()
    text = (responses / "golden.md").read_text()
    text = re.sub(r"\[\+\s*\d+\.\d\ds\] ", "", text)
    text = re.sub(r"started: \d{4}-\S+", "started: T", text)
    text = re.sub(r"\(\d+\.\d\ds;", "(D;", text)
    assert text == (
        "# golden\n\n"
        "- task: golden\n- kind: scripted\n- role: task\n- attempt: 1\n"
        "- depends on: (none)\n- parent: -\n- started: T\n\n"
        "## Prompt\n\n(scripted: 3 steps)\n\n## Progress\n\n"
        "started: scripted (3 steps)\n"
        "Creating the layout\n"
        "-> write: pkg/__init__.py (6 chars)\n"
        "-> run: echo hello; echo oops >&2\n"
        "| hello\n"
        "! oops\n"
        "finished: Creating the layout\n"
        "\nstatus: succeeded (D; 0 in / 0 out tokens, $0.0000) - Creating the layout\n"
    )
    assert (workspace / "pkg/__init__.py").read_text() == "x = 1\n"


# Each prints for 4 s, longer than the 3 s stall timeout (generous: a loaded machine may take
# a second to start the interpreter, and the stall clock runs from the spawn).
DOTS = (
    "import sys,time\nfor _ in range(40):\n"
    "    sys.stdout.write('.'); sys.stdout.flush(); time.sleep(0.1)"
)
BAR = (
    "import sys,time\nfor i in range(40):\n"
    "    sys.stderr.write(f'\\r{i * 8}% ' + '#' * i); sys.stderr.flush(); time.sleep(0.1)"
)
SILENT = "import time; time.sleep(30)"


async def test_a_stall_is_silence_not_a_missing_newline(make_run: MakeRun) -> None:
    """Progress dots and ``\\r`` bars never end a line, yet they are output: no stall."""
    import sys

    from orchestrator.plan.model import Task

    def python(tid: str, code: str) -> Task:
        return Task(tid, agent="command", command=(sys.executable, "-c", code), stall_timeout=3)

    run = make_run(python("dots", DOTS), python("bar", BAR), python("silent", SILENT))
    async with asyncio.timeout(30):
        await run.execute()
    assert run.agents["dots"].state == "succeeded", run.agents["dots"].reason
    assert run.agents["bar"].state == "succeeded", run.agents["bar"].reason
    assert run.agents["silent"].state == "timed_out"
    assert run.agents["silent"].reason == "stalled: no output for 3s"


async def test_an_agent_cancelled_before_its_first_step_still_ends_and_the_run_with_it(
    make_run: Callable[..., Run], responses: Path
) -> None:
    run = make_run(sleeper("a", 30), sleeper("b", 0.01, deps=("a",)))
    main = asyncio.ensure_future(run.execute())
    await asyncio.sleep(0)  # execute() started "a": its task exists and has not run a step yet
    assert run.agents["a"].state == "running"
    assert run.cancel("a") == ["a"]
    async with asyncio.timeout(20):
        await main
    assert run.agents["a"].state == "cancelled"
    assert run.tasks["b"].state == "skipped"
    last = (responses / "a.md").read_text().rstrip().splitlines()[-1]
    assert last.startswith("status: cancelled")


async def test_a_flood_of_output_is_recorded_line_by_line_masked_and_in_order(
    make_run: MakeRun, responses: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of a program's output go to the files in one pass each (`Run.agent_output`):
    every line still gets its own stamped line and record, in order, secrets masked, and the
    agent's last lines are the last ones it printed."""
    import json
    import sys

    from orchestrator.plan.model import Task

    key = "sk-ant-canary-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    code = (  # the key is not in the command line itself: only in what the program prints
        "import sys\nkey = 'sk-ant-' + 'canary-0123456789'\n"
        "for i in range(3000): sys.stdout.write(f'line {i} {key}\\n')"
    )
    run = make_run(Task("flood", agent="command", command=(sys.executable, "-c", code)))
    async with asyncio.timeout(30):
        await run.execute()
    rec = run.agents["flood"]
    assert rec.state == "succeeded", rec.reason
    md = (responses / "flood.md").read_text()
    jsonl = (responses / "flood.events.jsonl").read_text()
    assert key not in md
    assert key not in jsonl
    shown = [ln.split("] ", 1)[1] for ln in md.splitlines() if "] | line " in ln]
    assert shown == [f"| line {i} [REDACTED]" for i in range(3000)]
    records = [json.loads(ln) for ln in jsonl.splitlines()]
    lines = [r["line"] for r in records if r["event"] == "output"]
    assert lines == [f"line {i} [REDACTED]" for i in range(3000)]
    assert rec.lines[:-1] == [
        f"| line {i} [REDACTED]" for i in range(2981, 3000)
    ]  # then "finished"
    assert rec.summary == "line 2999 [REDACTED]"
