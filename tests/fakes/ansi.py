#!/usr/bin/env python3
"""Prints lines full of terminal escape sequences and other control characters."""

import sys

lines = [
    "\x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[m",
    "\x1b]0;evil title\x07title",
    "\x1b]8;;http://example.invalid\x1b\\link\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[Hcleared",
    "progress 10%\rprogress 100%",
    "tab\tstays",
    "8-bit \x9b31mcsi",
    "bidi \u202eevil\u202c end",
    "lone esc \x1b",
]
for line in lines:
    sys.stdout.write(line + "\n")
sys.stdout.flush()
