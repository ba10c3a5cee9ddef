"""``python -m orchestrator``: the same program as ``orchestrator`` and ``orch``."""

import sys

try:
    from orchestrator.cli import main
except KeyboardInterrupt:  # Ctrl-C while still importing: no traceback, the usual code
    sys.exit(130)

main()
