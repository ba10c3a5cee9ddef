"""`cancel` through the control socket, and without one when the orchestrator is gone.

Cancels go to a real background `orchestrator run`; the random scenarios drive `run_plan` in
this process (the same lock, journal, control socket and final sweep, minus the process
boundary) so that dozens of them stay fast. After every one: no process of the run is left,
found by scanning /proc for its run id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from clirun import (
    Fleet,
    ends_with_status,
    kill_with_its_guard,
    live_in_group,
    poll,
    sleepers,
    task,
    write_plan,
)
from conftest import processes_with_marker

from orchestrator.control import channel, leftovers
from orchestrator.events import TERMINAL_STATES
from orchestrator.plan.load import load_plan
from orchestrator.process import orphans, procfs
from orchestrator.records.journal import JournalState, load
from orchestrator.records.rundir import RunDir
from orchestrator.runner import RunOptions, run_plan


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def forever(tid: str, *, deps: tuple[str, ...] = (), shell: str = "sleep 30") -> dict[str, Any]:
    """A task that runs until it is stopped, and says so first."""
    return task(tid, {"run": f"echo {tid} is up; {shell}"}, deps=deps)


def group_gone(pgid: int) -> bool:
    return not live_in_group(pgid)


def journal_lines(fleet: Fleet) -> list[dict[str, Any]]:
    text = (fleet.responses / ".run" / "journal.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def status_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("status:")]


# --- with a live orchestrator -----------------------------------------------------------------


def test_cancel_stops_the_agent_group_and_its_dependents_are_skipped(fleet: Fleet) -> None:
    fleet.plan(forever("a"), task("b", deps=("a",)), task("c", {"sleep": 0.2}))
    run = fleet.start("run", "plan.yaml", "--no-live")
    pgid = fleet.wait_running("a").agents["a"]["pgid"]
    done = fleet.cli("cancel", "a")
    assert done.code == 0
    assert done.out == "cancelled: a\n"
    poll(lambda: group_gone(pgid), timeout=5, what="a's process group to be gone")
    assert fleet.finish(run).code == 1
    state = fleet.journal()
    assert state.agents["a"]["state"] == "cancelled"
    assert state.agents["a"]["reason"] == "cancelled by request"
    assert state.tasks["b"]["state"] == "skipped"
    assert state.tasks["c"]["state"] == "succeeded"
    (line,) = status_lines(fleet.responses / "a.md")
    assert line.startswith("status: cancelled")
    assert not fleet.leftovers()


def test_cancel_is_idempotent_and_an_ended_agent_is_fine(fleet: Fleet) -> None:
    fleet.plan(forever("a"), forever("b"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    assert fleet.call("cancel", "a").out == "cancelled: a\n"
    fleet.wait_state("a", "cancelled")
    again = fleet.call("cancel", "a")
    assert again.code == 0
    assert again.out == "cancelled: nothing left running\n"
    assert fleet.journal().agents["b"]["state"] == "running"
    assert fleet.call("cancel", "b").code == 0
    assert fleet.finish(run).code == 1
    assert len(status_lines(fleet.responses / "a.md")) == 1


def test_cancel_of_an_unknown_agent_exits_2_and_stops_nothing(fleet: Fleet) -> None:
    fleet.plan(forever("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    done = fleet.call("cancel", "a", "nope")
    assert done.code == 2
    assert "unknown agent 'nope'" in done.err
    assert fleet.journal().agents["a"]["state"] == "running", "nothing is stopped on a typo"
    assert fleet.call("cancel", "--all").code == 0
    assert fleet.finish(run).code == 1


def test_cancel_needs_agents_or_all_but_not_both(fleet: Fleet) -> None:
    for args in (("cancel",), ("cancel", "a", "--all")):
        done = fleet.call(*args)
        assert done.code == 2
        assert "Traceback" not in done.text


def fifty_cancels(fleet: Fleet, processes: int) -> None:
    """50 cancels of one agent at once: ``processes`` CLI calls, the rest raw socket clients."""
    fleet.plan(forever("a"), forever("b"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    sock = RunDir(fleet.responses).socket
    callers = [fleet.start("cancel", "a", pipe=True) for _ in range(processes)]
    with ThreadPoolExecutor(max_workers=50 - processes or 1) as pool:
        answers = list(
            pool.map(
                lambda _: channel.request(sock, {"op": "cancel", "agents": ["a"]}, timeout=30),
                range(50 - processes),
            )
        )
    results = [fleet.finish(c, timeout=60) for c in callers]
    assert [r.code for r in results] == [0] * processes, [r.err for r in results if r.code]
    assert all(a is not None and a["ok"] for a in answers), answers
    said = [r.out for r in results] + [
        "cancelled: a\n" if a and a["stopped"] == ["a"] else "cancelled: nothing left running\n"
        for a in answers
    ]
    assert said.count("cancelled: a\n") == 1, said
    fleet.wait_state("a", "cancelled")
    assert fleet.call("cancel", "b").code == 0
    assert fleet.finish(run).code == 1
    ended = [
        r
        for r in journal_lines(fleet)
        if r.get("k") == "agent" and r.get("id") == "a" and r.get("state") in TERMINAL_STATES
    ]
    assert len(ended) == 1
    assert ended[0]["state"] == "cancelled"
    assert len(status_lines(fleet.responses / "a.md")) == 1


def test_fifty_concurrent_cancels_record_exactly_one_cancellation(fleet: Fleet) -> None:
    fifty_cancels(fleet, processes=8)


@pytest.mark.slow
def test_fifty_concurrent_cancel_processes_all_exit_0(fleet: Fleet) -> None:
    fifty_cancels(fleet, processes=50)


def test_cancel_all_raises_the_fence_first_then_stops_every_agent(fleet: Fleet) -> None:
    fleet.plan(
        forever("a"),
        forever("b"),
        task("after-a", deps=("a",)),
        task("queued", {"sleep": 0.1}),
        limits={"max_concurrency": 2},
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    done = fleet.call("cancel", "--all")
    assert done.code == 0
    assert fleet.finish(run).code == 1
    records = journal_lines(fleet)
    fence = next(i for i, r in enumerate(records) if r.get("k") == "run" and r.get("fence"))
    stops = [
        i for i, r in enumerate(records) if r.get("k") == "agent" and r.get("state") == "cancelled"
    ]
    assert stops
    assert fence < min(stops), "the fence goes up before the first agent is stopped"
    state = fleet.journal()
    assert set(state.agents) == {"a", "b"}, "nothing started after the fence"
    assert state.tasks["queued"]["state"] == "cancelled"
    assert state.tasks["after-a"]["state"] in ("cancelled", "skipped")
    for name in ("a", "b", "queued", "after-a"):
        assert ends_with_status(fleet.responses / f"{name}.md"), name
    assert not fleet.leftovers()


def test_cancel_force_skips_the_grace_of_an_agent_that_ignores_sigterm(fleet: Fleet) -> None:
    stubborn = "trap '' TERM; while :; do sleep 0.05; done"
    fleet.plan(forever("a", shell=stubborn), limits={"grace": 30})
    run = fleet.start("run", "plan.yaml", "--no-live")
    pgid = fleet.wait_running("a").agents["a"]["pgid"]
    t0 = time.monotonic()
    assert fleet.cli("cancel", "a", "--force").code == 0
    poll(lambda: group_gone(pgid), timeout=20, what="the group to be gone despite a 30 s grace")
    assert time.monotonic() - t0 < 20  # the CLI's own start included (seconds at load 20)
    assert fleet.finish(run, timeout=10).code == 1


def test_a_plain_cancel_waits_out_the_grace_then_kills(fleet: Fleet) -> None:
    stubborn = "trap '' TERM; while :; do sleep 0.05; done"
    fleet.plan(forever("a", shell=stubborn), limits={"grace": 0.3})
    run = fleet.start("run", "plan.yaml", "--no-live")
    pgid = fleet.wait_running("a").agents["a"]["pgid"]
    assert fleet.call("cancel", "a").code == 0
    poll(lambda: group_gone(pgid), timeout=5, what="SIGKILL after the grace")
    assert fleet.finish(run, timeout=10).code == 1
    assert fleet.journal().agents["a"]["state"] == "cancelled"


def test_cancel_tree_also_stops_the_fixer_the_agent_spawned(fleet: Fleet) -> None:
    fleet.plan(
        task("a", {"block": "need a key"}),
        fixer={"agent": "scripted", "script": [{"run": "echo fixing; sleep 30"}]},
    )
    run = fleet.start("run", "plan.yaml", "--no-live")
    fixer = poll(
        lambda: next((a for a, r in fleet.journal().agents.items() if r.get("parent") == "a"), ""),
        what="a fixer of a",
    )
    fleet.wait_running(fixer)
    plain = fleet.call("cancel", "a")
    assert plain.code == 0
    assert fleet.journal().agents[fixer]["state"] == "running"
    tree = fleet.call("cancel", "a", "--tree")
    assert tree.code == 0
    assert tree.out == f"cancelled: {fixer}\n"
    fleet.wait_state(fixer, "cancelled")
    assert fleet.finish(run).code == 1
    assert not fleet.leftovers()


def test_control_answers_while_sixteen_agents_flood_output(fleet: Fleet) -> None:
    flood = "python -S -c \"import sys\nwhile True: sys.stdout.write('x' * 120 + chr(10))\""
    fleet.plan(*(forever(f"f{i}", shell=flood) for i in range(16)), limits={"grace": 0.5})
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running(*(f"f{i}" for i in range(16)), timeout=30)
    poll(lambda: (fleet.responses / "f0.md").stat().st_size > 100_000, what="a flood")
    t0 = time.monotonic()
    status = fleet.cli("status", "--json", timeout=10)
    status_s = time.monotonic() - t0
    assert status.code == 0
    assert len(json.loads(status.out)["agents"]) == 16
    t0 = time.monotonic()
    answer = channel.request(RunDir(fleet.responses).socket, {"op": "ping"})
    ping_s = time.monotonic() - t0
    assert answer is not None
    assert answer["ok"]
    t0 = time.monotonic()
    cancel = fleet.cli("cancel", "f3", timeout=10)
    cancel_s = time.monotonic() - t0
    assert cancel.out == "cancelled: f3\n"
    assert max(status_s, ping_s, cancel_s) < 5, (status_s, ping_s, cancel_s)  # gross bounds
    assert fleet.call("cancel", "--all").code == 0
    assert fleet.finish(run, timeout=30).code == 1
    assert not fleet.leftovers()


BAD_REQUESTS = [
    (b"[" * 70_000, "larger than"),
    (b'{"op": "ping", "pad": "' + b"x" * 70_000 + b'"}', "larger than"),
    (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
    (b"[" * 30_000, "nested too deeply"),
    (b'{"op": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b"not json", "not JSON"),
    (b"[]", "a JSON object"),
    (b'{"op": "shutdown"}', "unknown control op"),
    (b'{"op": "cancel", "agents": "a"}', "list of agent ids"),
    (b'{"op": "cancel", "agents": [["a"]]}', "list of agent ids"),
    (b'{"op": "cancel", "agents": ["a"], "force": "yes"}', "true or false"),
    (b'{"op": "cancel_all", "agents": {"x": {"y": 1}}}', "unexpected field"),
]


def raw_request(path: Path, data: bytes) -> dict[str, Any]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        with contextlib.suppress(OSError):  # the server may answer before it read it all
            sock.sendall(data + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    parsed: dict[str, Any] = json.loads(answer)
    return parsed


def test_bad_control_requests_get_an_error_answer_and_the_run_goes_on(fleet: Fleet) -> None:
    fleet.plan(forever("a"))
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a")
    sock = RunDir(fleet.responses).socket
    for data, why in BAD_REQUESTS:
        answer = raw_request(sock, data)
        assert answer["ok"] is False, data[:40]
        assert answer["code"] == 2
        assert why in answer["error"], (data[:40], answer)
    assert channel.request(sock, {"op": "ping"}) == {"ok": True, "pid": run.pid}
    assert fleet.cli("cancel", "--all").code == 0
    done = fleet.finish(run, timeout=30)
    assert "Traceback" not in done.text
    assert "RecursionError" not in done.text


# --- without an orchestrator ------------------------------------------------------------------


def test_with_the_orchestrator_gone_cancel_stops_the_recorded_agent_itself(fleet: Fleet) -> None:
    # Unconfined: sandboxed agents die with their orchestrator (tests/sandbox), these do not.
    fleet.plan(forever("a"), forever("b"), sandbox="off")
    run = fleet.start("run", "plan.yaml", "--no-live")
    fleet.wait_running("a", "b")
    run_id = fleet.run_id()
    # Running is not yet sleeping: wait until each agent's shell has started its sleep.
    poll(lambda: sleepers(run_id) == {"a", "b"}, what="both agents' sleeps")
    kill_with_its_guard(run)  # no cleanup of its own, no guard: the agents' sleeps survive
    poll(lambda: processes_with_marker(run_id), what="the agents' leftovers")
    one = fleet.cli("cancel", "a")
    assert one.code == 0, one.err
    assert one.out == "no orchestrator running; stopped: a\n"
    pids = processes_with_marker(run_id)
    assert pids, "b is left alone"
    assert all(agent_of(pid) == "b" for pid in pids)
    rest = fleet.call("cancel", "--all", "--force")
    assert rest.code == 0
    assert rest.out == "no orchestrator running; stopped: b\n"
    poll(lambda: not processes_with_marker(run_id), timeout=5, what="nothing left")
    assert fleet.call("cancel", "--all").out == "no orchestrator running; stopped: nothing\n"


def agent_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
    except OSError:
        return ""
    return env.get(b"ORCHESTRATOR_AGENT_ID", b"").decode()


def test_without_an_orchestrator_an_unknown_agent_is_still_exit_2(fleet: Fleet) -> None:
    fleet.plan(task("a"))
    assert fleet.cli("run", "plan.yaml", "--no-live").code == 0
    assert fleet.call("cancel", "nope").code == 2
    ended = fleet.call("cancel", "a")
    assert ended.code == 0
    assert ended.out == "no orchestrator running; stopped: nothing\n"


def sleeper_in_own_group() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )


def recorded(pid: int, pstart: int | None) -> JournalState:
    state = JournalState()
    state.run = {"run_id": "not-this-run", "state": "running"}
    state.agents["a"] = {"state": "running", "pid": pid, "pgid": pid, "pstart": pstart}
    return state


def test_stop_recorded_never_signals_a_recycled_pid() -> None:
    stranger = sleeper_in_own_group()
    try:
        start = procfs.process_start_time(stranger.pid)
        assert start is not None
        # The journal recorded this pid for a process that started at another time.
        assert leftovers.stop_recorded(recorded(stranger.pid, start - 1), ["a"], grace=0) == []
        assert leftovers.stop_recorded(recorded(stranger.pid, None), None, grace=0) == []
        assert stranger.poll() is None
        # The very process recorded is stopped.
        assert leftovers.stop_recorded(recorded(stranger.pid, start), ["a"], grace=1) == ["a"]
        assert stranger.wait(timeout=5) == -signal.SIGTERM
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_recorded_with_tree_follows_the_parent_links_of_the_journal() -> None:
    sleepers = {aid: sleeper_in_own_group() for aid in ("a", "a+fix1", "other")}
    try:
        state = JournalState()
        state.run = {"run_id": "not-this-run", "state": "running"}
        for aid, proc in sleepers.items():
            state.agents[aid] = {
                "state": "running", "pgid": proc.pid, "pstart": procfs.process_start_time(proc.pid),
                "parent": "a" if "+fix" in aid else None,
            }  # fmt: skip
        assert leftovers.stop_recorded(state, ["a"], grace=1, tree=True) == ["a", "a+fix1"]
        assert sleepers["a"].wait(timeout=5) == -signal.SIGTERM
        assert sleepers["a+fix1"].wait(timeout=5) == -signal.SIGTERM
        assert sleepers["other"].poll() is None
    finally:
        for proc in sleepers.values():
            proc.kill()
            proc.wait()


# --- random cancel scenarios, in process --------------------------------------------------------


def random_plan(rng: random.Random, n: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(n):
        d = round(rng.uniform(0.02, 0.2), 2)
        shapes: dict[str, list[dict[str, Any]]] = {
            "sleep": [{"sleep": d}],
            "run": [{"run": f"sleep {d}"}],
            "stubborn": [{"run": f"trap '' TERM; for i in $(seq {int(d * 20) + 1}); do sleep .05; "
                                 "done"}],
            "escapes": [{"run": f"setsid sleep 30 & sleep {d}"}],
            "orphans": [{"run": f"(sleep 30 &); sleep {d}"}],
            "fails": [{"sleep": d}, {"fail": "broken"}],
            "chatty": [{"run": f"for i in $(seq 200); do echo line $i; done; sleep {d}"}],
            "blocks": [{"sleep": d}, {"block": "needs a fixer"}],
        }  # fmt: skip
        kind = rng.choice(sorted(shapes))
        deps = (rng.choice(tasks)["id"],) if tasks and rng.random() < 0.3 else ()
        tasks.append(task(f"t{i}", *shapes[kind], deps=deps))
    return tasks


async def random_actions(rng: random.Random, sock: Path, ids: list[str], log: list[str]) -> None:
    """Cancel at random moments: agents, attempts, typos, everything; until the run is gone."""
    for _ in range(rng.randint(1, 6)):
        await asyncio.sleep(rng.uniform(0, 0.08))
        roll = rng.random()
        payload: dict[str, Any]
        if roll < 0.65:
            agent = rng.choice(ids)
            agent = agent if rng.random() < 0.8 else f"{agent}+2"
            payload = {"op": "cancel", "agents": [agent], "force": rng.random() < 0.3,
                       "tree": rng.random() < 0.3}  # fmt: skip
        elif roll < 0.8:
            payload = {"op": "cancel", "agents": ["no-such-agent"]}
        else:
            payload = {"op": "cancel_all", "force": rng.random() < 0.5}
        answer = await asyncio.to_thread(channel.request, sock, payload)
        log.append(f"{payload} -> {answer}")
        if answer is None:
            return  # the run has ended
        if payload.get("agents") == ["no-such-agent"]:
            assert answer == {
                "ok": False,
                "code": 2,
                "error": "error: unknown agent 'no-such-agent'",
            }
        elif not answer["ok"]:
            assert answer["code"] == 2  # an attempt that was never started


def scenario(seed: int, tmp_path: Path) -> list[str]:
    """One seeded plan and cancel sequence; returns what happened, for failure messages."""
    rng = random.Random(seed)
    ids = [f"t{i}" for i in range(rng.randint(3, 8))]
    fix = rng.choice([f"sleep {rng.uniform(0.05, 0.3):.2f}", "setsid sleep 30 & sleep 0.1"])
    path = write_plan(
        tmp_path / f"s{seed}.yaml",
        random_plan(rng, len(ids)),
        limits={"grace": 0.2},
        fixer={"agent": "scripted", "script": [{"run": fix}]},
    )
    (tmp_path / "ws").mkdir(exist_ok=True)
    plan = load_plan(path)
    responses = tmp_path / "agent-responses"
    sock = RunDir(responses).socket
    log: list[str] = []

    async def main() -> int:
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            run = tg.create_task(run_plan(plan, RunOptions(responses=responses, json=True)))
            await _until(lambda: sock.exists() or run.done())
            tg.create_task(random_actions(rng, sock, ids, log))
            return await run

    code = asyncio.run(main())
    journal = load(RunDir(responses).journal)
    run_id = journal.run["run_id"]
    log.append(f"agents: { {a: r['state'] for a, r in journal.agents.items()} }")
    poll(lambda: not processes_with_marker(run_id), timeout=5, what=f"seed {seed}: {log}")
    assert code in (0, 1), (seed, log)
    assert journal.run["state"] == "finished"
    assert journal.torn == 0
    for tid in ids:
        assert journal.tasks[tid]["state"] in TERMINAL_STATES, (seed, tid, log)
    for aid, rec in journal.agents.items():
        assert rec["state"] in TERMINAL_STATES, (seed, aid, log)
    records = [json.loads(ln) for ln in RunDir(responses).journal.read_text().splitlines()]
    ends = Counter(
        r["id"] for r in records if r.get("k") == "agent" and r.get("state") in TERMINAL_STATES
    )
    assert ends == dict.fromkeys(journal.agents, 1), (seed, ends, log)
    for md in responses.glob("*.md"):
        if md.name != "REPORT.md":
            assert ends_with_status(md), (seed, md.name, log)
            assert len(status_lines(md)) == 1, (seed, md.name, log)
    return log


async def _until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.005)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_plan in the test process: pytest itself must not become a child subreaper."""
    monkeypatch.setattr(orphans, "set_child_subreaper", lambda: False)
    monkeypatch.delenv("ORCHESTRATOR_DEPTH", raising=False)


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("seed", range(24))
def test_random_cancels_leave_no_process_and_one_final_state_each(
    seed: int, tmp_path: Path
) -> None:
    scenario(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("seed", range(1000, 1200))
def test_random_cancels_soak(seed: int, tmp_path: Path) -> None:
    scenario(seed, tmp_path)
