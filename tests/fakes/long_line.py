#!/usr/bin/env python3
"""Prints one line of SIZE bytes (default 1 MB) without a newline in between, then ``after``."""

import sys

size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024 * 1024
out = sys.stdout.buffer
chunk = b"x" * 65536
left = size
while left > 0:
    out.write(chunk[: min(left, len(chunk))])
    left -= len(chunk)
out.write(b"\nafter\n")
out.flush()
