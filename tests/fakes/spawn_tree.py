#!/usr/bin/env python3
"""Starts two grandchildren in its own group and, with ``--daemon``, a double-forked one.

The daemon calls setsid, so it leaves the process group; it also keeps stdout open.
Prints ``grandchild PID`` / ``daemon PID`` lines, then ``ready``; with ``--exit`` it exits 0
at once, otherwise it sleeps until killed.
"""

import os
import subprocess
import sys
import time

SLEEP = [sys.executable, "-c", "import time; time.sleep(3600)"]

for _ in range(2):
    kid = subprocess.Popen(SLEEP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"grandchild {kid.pid}", flush=True)

if "--daemon" in sys.argv:
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            os.execv(SLEEP[0], SLEEP)
        os._exit(0)
    os.close(write_end)
    daemon_pid = int(os.read(read_end, 32))
    print(f"daemon {daemon_pid}", flush=True)

print("ready", flush=True)
if "--exit" not in sys.argv:
    time.sleep(3600)  # noqa: TID251 -- a plain sync program, no event loop
