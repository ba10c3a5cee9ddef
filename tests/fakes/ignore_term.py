#!/usr/bin/env python3
"""Ignores SIGTERM (says so on stderr) and sleeps until SIGKILL."""

import signal
import sys
import time


def on_term(signum: int, frame: object) -> None:
    print("term ignored", file=sys.stderr, flush=True)


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(60)  # noqa: TID251 -- a plain sync program, no event loop
