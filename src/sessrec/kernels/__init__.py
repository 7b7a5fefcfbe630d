"""Fused CPU kernels for the hot loops, compiled with numba; plain-torch code is the fallback.

Each kernel does in ONE pass over memory what the torch code does in several passes with a temporary
per pass, which matters where the data is large or cold. By concern, each typed wrapper beside the numba
module (``*_jit``) that holds its kernels, both naming the torch code they are tested against:

* `sessrec.kernels.optim`: AdagradMomentum's row-wise (`sparse_adagrad_momentum_`), dense
  (`dense_adagrad_momentum_`) and fused-step (`row_update_`) updates;
* `sessrec.kernels.ranking`: the evaluation's rank count (`count_at_least`) and the int8-screened exact
  ranking of `sessrec.evaluation.screening` (`screen_queries`, `ScreenCount`);
* `sessrec.kernels.topk`: the screened top-k of a large item table (`ScreenTopK`, serving);
* `sessrec.kernels.rows`: `unique_inverse`, `index_add_rows_` (the row gathers of
  `sessrec.models.rows`) and `GuidedSearch` (the sampler's searchsorted);
* `sessrec.kernels.gru`, `sessrec.kernels.losses`: the GRU cell's backward and the sampled losses'
  gradients of the fused GRU4Rec step (`sessrec.training.fused`);
* `sessrec.kernels.loader`: the ``SESSREC_NUMBA`` switch and the lazy import of the numba modules
  (`enabled`); `sessrec.kernels.jit`: what those modules share.

The kernels run only on contiguous float32 CPU tensors (ids int64); every wrapper returns False / None
when it does not apply (other device or dtype, numba missing, ``SESSREC_NUMBA=0`` in the environment)
and the caller runs its torch code. Importing this package does not import numba: the first call of a
wrapper does (module-level kernels with numba's ``cache=True``: only the first process after an install
or an edit pays the ~3 s compilation).
"""

from __future__ import annotations

from sessrec.kernels.gru import gru_backward
from sessrec.kernels.loader import enabled
from sessrec.kernels.losses import bpr_max_grad, cross_entropy_grad, gather_columns
from sessrec.kernels.optim import dense_adagrad_momentum_, row_update_, sparse_adagrad_momentum_
from sessrec.kernels.ranking import ScreenCount, count_at_least, screen_queries
from sessrec.kernels.rows import GuidedSearch, index_add_rows_, unique_inverse
from sessrec.kernels.topk import ScreenTopK

__all__ = [
    "GuidedSearch", "ScreenCount", "ScreenTopK", "bpr_max_grad", "count_at_least", "cross_entropy_grad",
    "dense_adagrad_momentum_", "enabled", "gather_columns", "gru_backward", "index_add_rows_", "row_update_",
    "screen_queries", "sparse_adagrad_momentum_", "unique_inverse",
]
