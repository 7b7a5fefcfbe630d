"""The GRU cell's backward as a numba kernel (wrapped, with the shapes and the checks, by
`sessrec.kernels.gru`; imported on first use by `sessrec.kernels.loader`).

* `gru_backward`: one GRUCell's gate gradients from its saved activations, in one pass. Reference:
  autograd through `torch.nn.GRUCell` in `sessrec.models.gru` (tests/training/test_fused.py compares the
  fused GRU4Rec step that uses it with the autograd step).
"""

from __future__ import annotations

from sessrec.kernels.jit import jit


@jit
def gru_backward(dh, mask, has_mask, h, n, rz, gh, dgi, dgh, dbi, dbh):  # pragma: no cover - compiled
    # One GRUCell's gate gradients (torch's gate order r, z, n; h' = n + z (h - n), then dropout mask).
    # dh (B, >=H) gradient of the dropped-out output (columns :H used); mask, h, n (B, H); rz (B, 2H)
    # [r | z]; gh (B, 3H) the hidden-side pre-activations (gh_n = gh[:, 2H:]). Out: dgi, dgh (B, 3H)
    # d loss / d (input-side, hidden-side) pre-activations; dbi, dbh (3H,) their column sums.
    hid = h.shape[1]
    dbi[:] = 0.0
    dbh[:] = 0.0
    for b in range(h.shape[0]):
        for j in range(hid):
            d = dh[b, j] * mask[b, j] if has_mask else dh[b, j]
            r, z, nn_ = rz[b, j], rz[b, hid + j], n[b, j]
            dz = d * (h[b, j] - nn_) * (z * (1.0 - z))
            dn = (d - d * z) * (1.0 - nn_ * nn_)
            dr = dn * gh[b, 2 * hid + j] * (r * (1.0 - r))
            dnh = dn * r
            dgi[b, j], dgi[b, hid + j], dgi[b, 2 * hid + j] = dr, dz, dn
            dgh[b, j], dgh[b, hid + j], dgh[b, 2 * hid + j] = dr, dz, dnh
            dbi[j] += dr
            dbi[hid + j] += dz
            dbi[2 * hid + j] += dn
            dbh[j] += dr
            dbh[hid + j] += dz
            dbh[2 * hid + j] += dnh
