"""The GRU cell's backward in one pass over its saved activations (numba, `sessrec.kernels.gru_jit`).

* `gru_backward`: the gate gradients of one `torch.nn.GRUCell` step (gate order r, z, n;
  h' = n + z (h - n), then the dropout mask) and their column sums, from products of saved activations
  only: the fused GRU4Rec step's (`sessrec.training.fused`) replacement for autograd's dozen small ops
  per cell. Reference: autograd through the cells of `sessrec.models.gru`, which
  tests/kernels/test_kernels.py and tests/training/test_fused.py compare it with.

Returns False (nothing done) when numba is off or the tensors are not contiguous float32 CPU tensors.
"""

from __future__ import annotations

from torch import Tensor

from sessrec.kernels.loader import as_numpy, fits, load

__all__ = ["gru_backward"]


def gru_backward(
    grad_out: Tensor, mask: Tensor | None, h: Tensor, n: Tensor, rz: Tensor, gh: Tensor, grad_i: Tensor,
    grad_h: Tensor, bias_i: Tensor, bias_h: Tensor,
) -> bool:
    """One GRUCell's gradients w.r.t. its pre-activations, written into grad_i, grad_h, bias_i, bias_h.

    grad_out (B, >= H): d loss / d the cell's output after dropout (columns :H are used); mask (B, H)
    the dropout mask the output was multiplied by, or None; h (B, H) the previous hidden state;
    n (B, H) the candidate state tanh(gi_n + r gh_n); rz (B, 2H) the gates [r | z]; gh (B, 3H) the
    hidden-side pre-activations h W_hh^T + b_hh. Out: grad_i, grad_h (B, 3H) d loss / d the input-side
    and hidden-side pre-activations (they differ in the n gate only: d gh_n = r d gi_n); bias_i, bias_h
    (3H,) their column sums (the biases' gradients). False (nothing done) when the kernel does not apply.
    """
    jit = load("gru_jit")
    has_mask = mask is not None
    mask = mask if has_mask else n  # n stands in for the unused mask
    if jit is None or not fits(grad_out, mask, h, n, rz, gh, grad_i, grad_h, bias_i, bias_h):
        return False
    batch, hid = h.shape
    wide = (batch, 3 * hid)
    if (n.shape != h.shape or mask.shape != h.shape or rz.shape != (batch, 2 * hid) or gh.shape != wide
            or grad_i.shape != wide or grad_h.shape != wide or bias_i.shape != (3 * hid,)
            or bias_h.shape != (3 * hid,) or grad_out.shape[0] != batch or grad_out.shape[1] < hid):
        raise ValueError(f"gru_backward: shapes do not match a hidden state of {tuple(h.shape)}")
    jit.gru_backward(as_numpy(grad_out), as_numpy(mask), has_mask, as_numpy(h), as_numpy(n), as_numpy(rz),
                     as_numpy(gh), as_numpy(grad_i), as_numpy(grad_h), as_numpy(bias_i), as_numpy(bias_h))
    return True
