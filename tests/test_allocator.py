"""The allocator policy: set once per process, skipped on request, harmless elsewhere."""

from __future__ import annotations

import platform

import pytest

from distdd_nas import allocator


def test_tune_malloc_is_idempotent_and_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    allocator.tune_malloc.cache_clear()
    monkeypatch.setenv("DISTDD_NAS_MALLOC", "default")
    assert allocator.tune_malloc() is False
    monkeypatch.delenv("DISTDD_NAS_MALLOC")
    assert allocator.tune_malloc() is False  # decided once per process
    allocator.tune_malloc.cache_clear()
    first = allocator.tune_malloc()
    assert first is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert allocator.tune_malloc() is first
