#!/usr/bin/env python3
"""Becomes a subreaper, orphans a grandchild, prints whether it was adopted by us."""

import os
import sys
import time

from orchestrator.process.orphans import set_child_subreaper

print(f"subreaper {set_child_subreaper()}", flush=True)
read_end, write_end = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.close(read_end)
        time.sleep(0.5)  # noqa: TID251 -- no event loop here; then the middle process is gone
        os.write(write_end, str(os.getppid()).encode())
        os._exit(0)
    os._exit(0)
os.close(write_end)
os.wait()  # the middle process
adopter = int(os.read(read_end, 32))
print(f"adopted {adopter == os.getpid()}", flush=True)
os.wait()  # reap the adopted grandchild: that is the subreaper's job
sys.exit(0)
