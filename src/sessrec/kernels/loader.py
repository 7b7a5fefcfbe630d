"""When the numba kernels run: the ``SESSREC_NUMBA`` switch, their lazy import, and the checks every
typed wrapper of `sessrec.kernels` makes before it calls one.

The compiled kernels live in the ``*_jit`` modules of this package (``optim_jit``, ``ranking_jit``,
``rows_jit``, ``gru_jit``, ``losses_jit``, which import numba through `sessrec.kernels.jit`). Nothing
here imports numba at import time: `load` imports a ``*_jit`` module on its first use, so
``import sessrec.kernels`` stays cheap and works without numba. `load` returns None, and every wrapper
then returns its "does not apply" value (False or None) so that its caller runs the torch code, when

* ``SESSREC_NUMBA=0`` is in the environment (read at every call: tests flip it), or
* numba is missing or not built for this Python / numpy (ImportError).

The kernels are module-level functions compiled with ``cache=True``: numba caches their machine code in
``__pycache__`` beside the module (or in its user cache), so only the first process after an install or
an edit pays the compilation (~3 s for all of them). Where no cache directory is writable, numba
refuses ``cache=True`` (RuntimeError at import); `load` then caches in a temporary directory instead.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_numpy", "enabled", "fits", "load"]

_MODULES: dict[str, ModuleType | None] = {}  # "optim_jit" -> the imported module, or None: numba missing


def enabled() -> bool:
    """True when numba imports and ``SESSREC_NUMBA`` is not "0" (the kernels then apply to CPU float32)."""
    return load("jit") is not None


def load(name: str) -> ModuleType | None:
    """The numba module ``sessrec.kernels.<name>`` (imported on first use), or None when the kernels are
    off: ``SESSREC_NUMBA=0``, or numba is missing."""
    if os.environ.get("SESSREC_NUMBA", "1") == "0":
        return None
    try:
        return _MODULES[name]
    except KeyError:
        module = _MODULES[name] = _import(name)
        return module


def _import(name: str) -> ModuleType | None:
    qualified = f"{__package__}.{name}"
    try:
        try:
            return importlib.import_module(qualified)
        except RuntimeError:  # numba found no writable cache directory: cache in a temporary one instead
            import numba

            if not numba.config.CACHE_DIR:
                numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="sessrec-numba-")
            return importlib.import_module(qualified)
    except ImportError:  # numba not installed or not built for this Python / numpy
        return None


_F32 = torch.float32


def fits(*tensors: Tensor) -> bool:
    """Whether every tensor is a contiguous float32 CPU tensor (what the float kernels are compiled for)."""
    for t in tensors:  # (called a dozen times a training step: a plain loop, the cheap test first)
        if t.dtype != _F32 or not t.is_cpu or not t.is_contiguous():
            return False
    return True


def as_numpy(t: Tensor) -> np.ndarray:
    """The numpy view (no copy) of a CPU tensor, detached from autograd: what a kernel is called with."""
    return t.detach().numpy() if t.requires_grad else t.numpy()  # (detach costs as much as numpy)
