"""The end of a progress file, read cheaply: `peek`'s last lines and a view's last line.

Readers open the file as its writer does (`open_regular`: never through a link, never
blocking on a FIFO) and read only its last blocks, so a 50 MiB file costs what a small one does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator.records.progress import open_regular, safe_path


def last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a file, reading only its end (a peek must stay cheap).

    Never through a link, never from a FIFO (`open_regular`)."""
    if n <= 0:
        return []
    with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        block = 4096
        data = b""
        while size > 0 and data.count(b"\n") <= n:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
            block *= 2
    return data.decode("utf-8", "replace").splitlines()[-n:]


_STAMP = re.compile(r"\[\+ *[0-9.]+s\] ")


def last_said(responses: Path, agent_id: str) -> str:
    """The last progress line of an agent, without its time stamp ("" when there is none)."""
    try:
        lines = last_lines(safe_path(responses, f"{agent_id}.md"), 3)
    except (OSError, ValueError):
        return ""
    text = next((ln for ln in reversed(lines) if ln.strip()), "")
    return _STAMP.sub("", text, count=1)[:200]
