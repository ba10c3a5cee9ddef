#!/usr/bin/env python3
"""Prints each argument on a line of its own, then the working directory."""

import os
import sys

for arg in sys.argv[1:]:
    print(f"arg={arg}")
print(f"cwd={os.getcwd()}")
