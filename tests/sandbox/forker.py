"""Forks children that sleep until it has 60 or a fork fails; prints ``started N``."""

import os
import signal
import time

kids = []
for _ in range(60):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(5)  # noqa: TID251 - a plain sync program
        os._exit(0)
    kids.append(pid)
print(f"started {len(kids)}", flush=True)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
