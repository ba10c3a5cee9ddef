#!/usr/bin/env python3
"""Leaves a grandchild that holds stdout and stderr open, then exits 0 at once."""

import subprocess
import sys

kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
print(f"grandchild {kid.pid}", flush=True)
print("parent done", flush=True)
