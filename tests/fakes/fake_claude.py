#!/usr/bin/env python3
"""A stand-in for ``claude -p --output-format stream-json``: replays a recorded stream.

Options of its own start with ``--fake-``; every other argument (Claude Code's flags, the
prompt) is accepted and ignored, but recorded with ``--fake-argv FILE``.

- ``--fake-stream FILE``: print FILE's lines (``streams/NAME.jsonl`` when FILE has no slash);
- ``--fake-delay S``: wait S seconds between two lines;
- ``--fake-garbage``: first print lines that are not stream-json (plain text, broken JSON,
  a JSON array, invalid UTF-8, terminal escapes, an unknown message type);
- ``--fake-stderr TEXT``: print TEXT on stderr before exiting;
- ``--fake-exit N``: exit with N (default 0);
- ``--fake-argv FILE``: write ``{"argv": [...], "env": {...}}`` to FILE first (env: the
  ``CLAUDE_*``, ``ORCHESTRATOR_*``, ``ANTHROPIC_*`` and ``DISABLE_*`` variables);
- ``--fake-hang N``: ignore SIGTERM, start N grandchildren that ignore it too, print
  ``ready`` and sleep until killed;
- ``--fake-escape``: with ``--fake-hang``, start one more grandchild in a session of its own
  (as Claude Code runs its Bash tool), out of reach of a signal to the process group.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STREAMS = Path(__file__).resolve().parent / "streams"
HANG = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('grandchild up', flush=True); time.sleep(3600)"
)
GARBAGE = [
    b"plain text from a wrapper script",
    b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "cut off',
    b"[1, 2, 3]",
    b"bad \xff\xfe utf-8 \xc3\x28",
    b"\x1b[31mred warning\x1b[0m",
    b'{"type": "mystery_event_of_a_later_version", "data": 1}',
    b'{"no_type": true}',
]


def options(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--fake-garbage", "--fake-escape"):
            out[arg.removeprefix("--fake-")] = "1"
        elif arg.startswith("--fake-") and i + 1 < len(argv):
            out[arg.removeprefix("--fake-")] = argv[i + 1]
            i += 1
        i += 1
    return out


def main() -> None:
    opts = options(sys.argv[1:])
    out = sys.stdout.buffer
    if "argv" in opts:
        prefixes = ("CLAUDE_", "ORCHESTRATOR_", "ANTHROPIC_", "DISABLE_")
        env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
        Path(opts["argv"]).write_text(json.dumps({"argv": sys.argv[1:], "env": env}))
    if "hang" in opts:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _ in range(int(opts["hang"])):
            subprocess.Popen([sys.executable, "-c", HANG], stdout=subprocess.DEVNULL)
        if "escape" in opts:
            subprocess.Popen(
                [sys.executable, "-c", HANG], stdout=subprocess.DEVNULL, start_new_session=True
            )
        out.write(b"ready\n")
        out.flush()
        while True:
            time.sleep(60)  # noqa: TID251 - a plain sync program, no event loop
    if "garbage" in opts:
        out.write(b"\n".join(GARBAGE) + b"\n")
        out.flush()
    if "stream" in opts:
        name = opts["stream"]
        path = Path(name) if "/" in name else STREAMS / f"{name}.jsonl"
        delay = float(opts.get("delay", "0"))
        for line in path.read_bytes().splitlines():
            out.write(line + b"\n")
            out.flush()
            if delay:
                time.sleep(delay)  # noqa: TID251 - a plain sync program, no event loop
    if "stderr" in opts:
        print(opts["stderr"], file=sys.stderr, flush=True)
    sys.exit(int(opts.get("exit", "0")))


if __name__ == "__main__":
    main()
