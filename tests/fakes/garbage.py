#!/usr/bin/env python3
"""Writes binary garbage and invalid UTF-8, then a clean line."""

import sys

out = sys.stdout.buffer
out.write(bytes(b for b in range(256) if b != 10) + b"\n")
out.write(b"bad \xff\xfe utf8 \xc3\x28 end\n")
out.write(b"nul\x00byte\x07bell\x08back\n")
out.write("caf\u00e9 \u2713\n".encode())
out.write(b"clean\n")
out.flush()
