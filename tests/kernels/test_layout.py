"""The layout of sessrec.kernels: numba is imported lazily, and every wrapper declines when it is off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sessrec.kernels

KERNELS = Path(sessrec.kernels.__file__).parent
JIT_MODULES = sorted(p.stem for p in KERNELS.glob("*_jit.py"))

# Calls every public wrapper with tensors it would handle were numba on; prints how many declined.
_CALL_EVERY_WRAPPER = r"""
import sys
import torch
from sessrec import kernels

f = torch.zeros(4, 3)
ids = torch.tensor([0, 2])
q, q8, info = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int8), torch.zeros(2, 4, dtype=torch.float64)
rows = torch.zeros(2)
screen = dict(
    q=q, targets=ids, ts=rows.double(), sq=rows, ea=rows, ec=rows, slack=rows, weight=f, bias=torch.zeros(4),
    st=torch.zeros(4), eu=torch.zeros(4), ev=torch.zeros(4), mask=torch.ones(4, dtype=torch.uint8), cap=5,
    und=torch.zeros(2, 8, dtype=torch.int32), und_up=torch.zeros(2, 8, dtype=torch.bool),
    flags=torch.zeros(8, dtype=torch.uint8),
)
h = torch.zeros(2, 3)
declined = [
    not kernels.enabled(),
    not kernels.sparse_adagrad_momentum_(f, f.clone(), None, ids, torch.ones(2, 3), 0.1, 0.0, 1e-6),
    not kernels.dense_adagrad_momentum_([(f, f.clone(), f.clone(), None)], 0.1, 0.0, 1e-6),
    not kernels.row_update_(f, f.clone(), None, ids, torch.tensor([0, 1, 1]), torch.ones(1, 2),
                            torch.ones(2, 3), torch.zeros(4, 3), 0.1, 0.0, 1e-6),
    kernels.count_at_least(torch.zeros(2, 3), torch.zeros(2, 1), False, None) is None,
    not kernels.screen_queries(q, f, torch.zeros(4), ids, q8, info),
    kernels.ScreenCount.start(**screen) is None,
    kernels.unique_inverse(ids, 4) is None,
    not kernels.index_add_rows_(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2, 3)),
    not kernels.GuidedSearch.applies(torch.tensor([1.0, 2.0], dtype=torch.float64)),
    not kernels.gru_backward(h, None, h, h, torch.zeros(2, 6), torch.zeros(2, 9), torch.zeros(2, 9),
                             torch.zeros(2, 9), torch.zeros(9), torch.zeros(9)),
    not kernels.gather_columns(f, ids, ids, torch.zeros(4), torch.zeros(4), torch.zeros(4, 4)),
    kernels.cross_entropy_grad(torch.full((2, 3), 1 / 3), -55.0) is None,
    kernels.bpr_max_grad(h, h, h, h, 0.5, 1.0, 1e-24, h.clone()) is None,
]
print(sum(declined), len(declined), "numba" in sys.modules)
"""


def _run(code: str, **env: str) -> str:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_the_package_does_not_import_numba():
    code = "import sys, sessrec.kernels; print('numba' in sys.modules, 'sessrec.kernels.jit' in sys.modules)"
    assert _run(code) == ["False", "False"]


def test_numba_switched_off_makes_every_wrapper_decline():
    declined, wrappers, imported = _run(_CALL_EVERY_WRAPPER, SESSREC_NUMBA="0")
    assert declined == wrappers and imported == "False"


@pytest.mark.skipif(not sessrec.kernels.enabled(), reason="numba kernels unavailable")
def test_every_wrapper_applies_to_those_tensors_when_numba_is_on():  # the declines above are not vacuous
    declined, _, imported = _run(_CALL_EVERY_WRAPPER, SESSREC_NUMBA="1")
    assert declined == "0" and imported == "True"


def test_numba_missing_makes_every_wrapper_decline():
    hide_numba = "import sys\nsys.modules['numba'] = None  # import numba raises ImportError\n"
    code = hide_numba + _CALL_EVERY_WRAPPER
    declined, wrappers, _ = _run(code, SESSREC_NUMBA="1")
    assert declined == wrappers


@pytest.mark.skipif(not sessrec.kernels.enabled(), reason="numba kernels unavailable")
@pytest.mark.parametrize("name", JIT_MODULES)
def test_every_numba_module_loads(name: str):
    from sessrec.kernels.loader import load

    assert load(name) is not None


def test_modules_are_small_and_documented():
    assert {"optim_jit", "ranking_jit", "rows_jit", "gru_jit", "losses_jit"} <= set(JIT_MODULES)
    for path in KERNELS.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        assert text.startswith('"""'), path.name  # a module docstring
        if path.stem in JIT_MODULES or path.stem == "jit":
            continue
        assert not re.search(r"^(import|from) (numba|llvmlite)", text, re.M), path.name  # lazily: the loader
