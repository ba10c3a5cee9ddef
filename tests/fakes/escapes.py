#!/usr/bin/env python3
"""The escape corpus: an agent that tries every way we know to outlive its stop.

``escapes.py NONCE KIND... [--then exit|wait]`` starts, for each KIND, processes whose
command line holds NONCE, a number like ``7200.1234`` (they are ``sleep NONCE``, so a test
finds them whatever they did to their environment):

- ``ignore-term``: a child that ignores SIGTERM;
- ``setsid``: two grandchildren in sessions of their own;
- ``daemon``: a double fork, ``setsid``, then exec with an empty environment (``env -i``);
- ``hopper``: a process that keeps forking and exiting (a new pid every 20 ms);
- ``burst``: 200 children at once;
- ``hold-stdout``: a grandchild that keeps stdout and stderr open.

It prints ``ready`` once all are up, then exits 0 (``--then exit``) or waits for SIGKILL,
ignoring SIGTERM (``--then wait``, the default).
"""

import os
import signal
import subprocess
import sys
import time


def sleeper(nonce: str) -> list[str]:
    """``sleep NONCE``: NONCE is a number of seconds (``7200.<digits>``), small to start."""
    return ["/bin/sleep", nonce]


def ignore_term() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through exec


def daemon(nonce: str) -> None:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execve("/bin/sleep", sleeper(nonce), {})  # env -i
        os._exit(0)
    os.wait()


def hopper(nonce: str) -> None:
    if os.fork() == 0:
        os.setsid()
        while True:
            if os.fork() != 0:
                os._exit(0)  # the parent exits, the child goes on: a new pid each time
            time.sleep(0.02)  # noqa: TID251 -- a plain sync program


def main() -> None:
    nonce, rest = sys.argv[1], sys.argv[2:]
    then = "wait"
    if "--then" in rest:
        then = rest[rest.index("--then") + 1]
        rest = rest[: rest.index("--then")]
    null = subprocess.DEVNULL
    for kind in rest:
        if kind == "ignore-term":
            subprocess.Popen(sleeper(nonce), preexec_fn=ignore_term, stdout=null, stderr=null)
        elif kind == "setsid":
            for _ in range(2):
                subprocess.Popen(sleeper(nonce), start_new_session=True, stdout=null, stderr=null)
        elif kind == "daemon":
            daemon(nonce)
        elif kind == "hopper":
            hopper(nonce)
        elif kind == "burst":
            for _ in range(200):
                subprocess.Popen(sleeper(nonce), stdout=null, stderr=null)
        elif kind == "hold-stdout":
            subprocess.Popen(sleeper(nonce))
        else:
            raise SystemExit(f"unknown kind {kind}")
    print("ready", flush=True)
    if then == "exit":
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(60)  # noqa: TID251 -- a plain sync program


if __name__ == "__main__":
    main()
