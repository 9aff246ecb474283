"""The daemon's allocator setting takes effect where the C library has it."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from eventbus.memory import fix_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's mmap threshold is a glibc setting")
def test_glibc_accepts_the_fixed_mmap_threshold() -> None:
    assert ctypes.util.find_library("c") is not None
    assert fix_mmap_threshold() is True
