"""The daemon's memory settings: the allocator's (where the C library has it) and the collector's."""

from __future__ import annotations

import ctypes.util
import gc
import platform

import pytest

from eventbus.memory import GC_YOUNG_THRESHOLD, fix_mmap_threshold, tune_gc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's mmap threshold is a glibc setting")
def test_glibc_accepts_the_fixed_mmap_threshold() -> None:
    assert ctypes.util.find_library("c") is not None
    assert fix_mmap_threshold() is True


def test_tune_gc_raises_the_young_threshold_and_freezes_what_exists() -> None:
    before_threshold, before_frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before_threshold[1:])
        assert gc.get_freeze_count() > before_frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before_threshold)
