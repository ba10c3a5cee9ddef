"""One record as one JSON line: what the journal and every events sidecar hold.

Records are encoded by ``orjson`` (about 0.2 us for an agent's start record, against 3 us for
the standard library's encoder, and a run encodes about seven records an agent on its event
loop). What ``orjson`` refuses (a lone surrogate from a decoded stream, an integer past 64
bits) goes through the standard library's encoder with the same compact separators, so every
line reads the same way whichever encoded it. Objects JSON has no type for (a path, a date,
a dataclass) are written as their ``str``, as they always were.

Either way a line is only data: control characters are escaped (JSON does below 0x20; the
rest of what a terminal or ``str.splitlines`` would act on is escaped here).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import orjson

_RAW_CONTROLS = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What JSON may carry raw but a terminal or ``str.splitlines`` would act on: DEL and C1
controls, the Unicode line separators, bidi overrides. Below 0x20 JSON escapes itself."""
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS  # {1: ...} becomes {"1": ...}, as the standard library does
    | orjson.OPT_PASSTHROUGH_DATACLASS  # to ``default``: their str, not a dict
    | orjson.OPT_PASSTHROUGH_DATETIME
)
_FALLBACK = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode


def now() -> float:
    """The wall clock to the microsecond, as records carry it (``t``): what ``round(t, 6)``
    gives, at a fifth of its cost (records are stamped on the event loop)."""
    return int(time.time() * 1_000_000) / 1_000_000


def _escaped(text: str) -> str:
    if text.isprintable():  # the common case skips the regex
        return text
    return _RAW_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def json_bytes(record: dict[str, Any]) -> bytes:
    """``record`` as one line of UTF-8 (newline included) that is only data."""
    try:
        data = orjson.dumps(record, default=str, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, a very large integer
        return (_escaped(_FALLBACK(record)) + "\n").encode("utf-8", "replace")
    if not data.isascii() or b"\x7f" in data:
        data = _escaped(data.decode()).encode()
    return data + b"\n"


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line (newline included) that is only data, whatever its
    strings hold."""
    try:
        text = orjson.dumps(record, default=str, option=_OPTIONS).decode()
    except TypeError:
        text = _FALLBACK(record)
    return _escaped(text) + "\n"


def json_string(text: str) -> str:
    """``text`` as `json_line` encodes it inside a record, when ``text`` is printable (else
    `json_line` has more to escape)."""
    try:
        return orjson.dumps(text).decode()
    except TypeError:
        return _FALLBACK(text)
