#!/usr/bin/env python3
"""Prints a few lines (the last one non-empty, then a blank one) and exits with CODE."""

import sys

print("first", flush=True)
print("oops", file=sys.stderr, flush=True)
print("the summary line", flush=True)
print("   ", flush=True)
sys.exit(int(sys.argv[1]))
