"""Secrets a program gets once: a pipe, filled and closed before the spawn, read by the child.

For the rare program that needs a real credential the model gateway cannot stand in for
(the plan declares it: a task's ``secrets: [NAME]``). The values travel as ``NAME=value``
lines on a pipe whose read end the child inherits; ``ORCHESTRATOR_SECRETS_FD`` names its
descriptor. The orchestrator writes them all and closes its end before the child starts, so
the child reads them and then an end of file. Once read, the pipe is empty: a tool the
program runs afterwards (or anything that reopens ``/proc/<pid>/fd/<n>``) finds nothing.
They are never in an environment, an argument or a file.

The limits (docs/plan.md, "Secrets"): the program must read the pipe before it starts
anything (a child started first inherits the descriptor and could read it first) and
should close it; the value then lives in the program's memory, which a tool running as the
same user can read through ``/proc/<pid>/mem`` unless the program makes itself
non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``), and which it may itself hand on (an
environment variable it sets is inherited by its tools).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

SECRETS_FD_VAR = "ORCHESTRATOR_SECRETS_FD"
MAX_SECRETS = 60 * 1024
"""Bytes at most: the whole payload fits in a pipe's buffer, so writing it never blocks."""


def open_secrets(secrets: Mapping[str, str]) -> int:
    """A pipe holding ``secrets`` as ``NAME=value`` lines, its write end closed: the read end
    to pass to the child (inheritable there only through ``pass_fds``). OSError for a
    value with a line break or NUL, or a payload past `MAX_SECRETS`."""
    lines = []
    for name, value in secrets.items():
        if "\n" in value or "\0" in value or "=" in name or "\n" in name:
            raise OSError(errno.EINVAL, f"secret {name}: a line break cannot be sent")
        lines.append(f"{name}={value}\n")
    payload = "".join(lines).encode()
    if len(payload) > MAX_SECRETS:
        raise OSError(errno.E2BIG, f"secrets past {MAX_SECRETS} bytes")
    read, write = os.pipe()
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(write, view) :]
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return read
