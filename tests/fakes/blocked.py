#!/usr/bin/env python3
"""Works a little, reports a blocker (twice), keeps printing, exits with CODE (default 0)."""

import sys

print("working", flush=True)
print("  BLOCKED: need schema", flush=True)
print("BLOCKED: a second blocker", file=sys.stderr, flush=True)
print("still here", flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
