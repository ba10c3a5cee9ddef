#!/usr/bin/env python3
"""Prints COUNT numbered lines as fast as it can."""

import sys

count = int(sys.argv[1])
sys.stdout.write("".join(f"line {i}\n" for i in range(count)))
sys.stdout.flush()
