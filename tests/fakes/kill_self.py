#!/usr/bin/env python3
"""Prints a line and kills itself with SIGNAL (default SIGKILL)."""

import os
import signal
import sys

print("about to die", flush=True)
os.kill(os.getpid(), int(sys.argv[1]) if len(sys.argv) > 1 else signal.SIGKILL)
