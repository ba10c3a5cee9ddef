"""libc's functions through `orchestrator.process.libc`: loaded once, None where missing."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest

from orchestrator.process import libc

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's libc")


@linux
def test_a_function_is_called_with_its_signature_and_loaded_once() -> None:
    getpid = libc.function("getpid", (), ctypes.c_int)
    assert getpid is not None
    assert getpid() == os.getpid()
    assert libc.function("getpid", (), ctypes.c_int) is getpid


@linux
def test_a_function_the_libc_lacks_is_none() -> None:
    assert libc.function("orchestrator_no_such_function", (), ctypes.c_int) is None


def test_off_linux_nothing_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc.sys, "platform", "darwin")
    assert libc.function("orchestrator_off_linux_probe", (), ctypes.c_int) is None
