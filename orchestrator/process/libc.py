"""Functions of the C library that the standard library does not wrap (``prctl``,
``fallocate``, ``malloc_trim``): each loaded once, by the caller's first use in the parent (so
never a ``dlopen`` in a freshly forked child), and None off Linux or where the libc lacks it.
``ctypes`` is imported on first use: `status` imports modules that hold such functions and
must start fast."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


@functools.cache
def function(name: str, argtypes: tuple[Any, ...], restype: Any) -> Callable[..., int] | None:
    """libc's ``name`` with its C signature (errno kept for ``ctypes.get_errno``)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):  # a libc without it (musl has no malloc_trim)
        return None
    fn.argtypes = list(argtypes)
    fn.restype = restype
    found: Callable[..., int] = fn
    return found
