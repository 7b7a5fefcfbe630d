"""Process-level tuning (`sessrec.runtime`)."""

from __future__ import annotations

import gc

import pytest

from sessrec.runtime import GC_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_tune_gc_raises_only_the_young_threshold(restore_gc, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SESSREC_NO_GC_TUNE", raising=False)
    gc.set_threshold(700, 10, 10)
    assert tune_gc()
    assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)
    assert gc.isenabled()


def test_tune_gc_opt_out(restore_gc, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SESSREC_NO_GC_TUNE", "1")
    gc.set_threshold(700, 10, 10)
    assert not tune_gc()
    assert gc.get_threshold() == (700, 10, 10)
