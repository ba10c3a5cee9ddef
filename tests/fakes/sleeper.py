#!/usr/bin/env python3
"""Prints ``ready``, sleeps SECONDS (default: a long time), prints ``done``."""

import sys
import time

print("ready", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)  # noqa: TID251 -- a plain sync program, no event loop
print("done", flush=True)
