#!/usr/bin/env python3
"""An orchestrator in miniature for the guard: starts `sleep`s carrying run markers, prints
``ready <guard pid> <pid>...`` and waits; SIGKILL it to test what the guard stops.

Usage: guarded.py RUN_ID [--ended OTHER_ID] [--kill-guard-first]

- RUN_ID: one sleep with that marker, in a session of its own (as an escaped descendant);
- --ended OTHER_ID: one more with OTHER_ID's marker, whose run is then told ended;
- --kill-guard-first: the guard is started, SIGKILLed and waited for before anything else.
"""

import os
import signal
import subprocess
import sys
import time

from orchestrator.process.guard import GUARD

RUN_ID_VAR = "ORCHESTRATOR_RUN_ID"


def sleeper(run_id: str) -> int:
    env = dict(os.environ, **{RUN_ID_VAR: run_id})
    quiet = subprocess.DEVNULL  # our stdout is the test's pipe: a sleep left must not hold it
    return subprocess.Popen(
        ["sleep", "300"], env=env, start_new_session=True, stdout=quiet, stderr=quiet
    ).pid


def main() -> None:
    run_id, rest = sys.argv[1], sys.argv[2:]
    if "--kill-guard-first" in rest:
        assert GUARD.covers(run_id)
        first = GUARD.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)
    assert GUARD.covers(run_id), "a guard is started (again)"
    pids = [sleeper(run_id)]
    if "--ended" in rest:
        other = rest[rest.index("--ended") + 1]
        assert GUARD.covers(other)
        pids.append(sleeper(other))
        GUARD.forget(other)
    print("ready", GUARD.pid, *pids, flush=True)
    time.sleep(3600)  # noqa: TID251 -- a plain sync program, no event loop


main()
