"""The numba kernels behind `sessrec.kernels` (imported only when numba is installed).

Module-level functions, so that numba's on-disk cache (``cache=True``, in ``__pycache__`` or numba's
user cache) is hit by later processes: functions defined in a closure were recompiled in every process
(~1 s for the training kernels, ~2.5 s for the ranking kernels). See `sessrec.kernels` for what each
does and for the torch code it replaces.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# error_model="numpy": no zero-division checks, which would keep LLVM from vectorising the loops
_OPTIONS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
jit = numba.njit(**_OPTIONS)
inlined = numba.njit(inline="always", **_OPTIONS)  # inlined into its callers: no call per row


_PREFETCH_LINES = 8  # cache lines prefetched per row: rows of up to 128 float32
_AHEAD = 8  # rows prefetched ahead of the one updated (measured: 2 -> 1.8x, 8 -> 2.4x faster than none)


@intrinsic
def prefetch_row(typingctx, table, row):  # pragma: no cover - compiled
    """Prefetch (for writing, into all cache levels) the first 512 bytes of row `row` of a 2-D table.

    The row-wise updates touch ~2,000 scattered rows of tables far larger than the L2 cache; without a
    hint each row's first load waits for memory (the updates ran at ~1/5 of their in-cache speed).
    """
    sig = types.void(table, row)

    def codegen(context, builder, signature, args):
        table_type = signature.args[0]
        array = context.make_array(table_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        shape = cgutils.unpack_tuple(builder, array.shape)
        strides = cgutils.unpack_tuple(builder, array.strides)
        ptr = cgutils.get_item_pointer2(context, builder, array.data, shape, strides, table_type.layout,
                                        [args[1], zero])
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr], fnty)  # .p0 or .p0i8 by LLVM
        base = builder.bitcast(ptr, byte_ptr)
        for line in range(_PREFETCH_LINES):
            at = builder.gep(base, [context.get_constant(types.intp, 64 * line)])
            builder.call(fn, [at, i32(1), i32(3), i32(1)])  # write, keep in all levels, data cache
        return context.get_dummy_value()

    return sig, codegen


@inlined
def dense_one(p, grad, acc, mom, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    # all (M,) float32 views of the same shape
    neg_lr = -lr
    for i in range(p.shape[0]):
        g = grad[i]
        a = acc[i] + g * g
        acc[i] = a
        step = neg_lr * g / np.sqrt(a + eps)  # torch's addcdiv order: (value * t1) / t2
        if has_mom:
            v = mom[i] * momentum + step
            mom[i] = v
            p[i] += v
        else:
            p[i] += step


@jit
def sparse(p, acc, mom, rows, values, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    sparse_rows(p, acc, mom, rows, values, lr, momentum, eps, has_mom)


@inlined
def sparse_rows(p, acc, mom, rows, values, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    # p, acc, mom (N, D) float32; rows (K,) int64 unique; values (K, D) float32: each row as dense_one
    n = rows.shape[0]
    for k in range(n):
        if k + _AHEAD < n:
            ahead = rows[k + _AHEAD]
            prefetch_row(p, ahead)
            prefetch_row(acc, ahead)
            if has_mom:
                prefetch_row(mom, ahead)
        r = rows[k]
        dense_one(p[r], values[k], acc[r], mom[r], lr, momentum, eps, has_mom)


@jit
def dense(ps, grads, accs, moms, lr, momentum, eps, has_mom):  # pragma: no cover - compiled
    # tuples of (M_i,) float32 views
    for i in range(len(ps)):
        dense_one(ps[i], grads[i], accs[i], moms[i], lr, momentum, eps, has_mom)


@jit
def count(scores, target, strict, out):  # pragma: no cover - compiled
    # scores (B, N) float32, target (B,) float32, out (B,) int64 (added to)
    for i in range(scores.shape[0]):
        t = target[i]
        c = 0
        if strict:
            for j in range(scores.shape[1]):
                c += scores[i, j] > t
        else:
            for j in range(scores.shape[1]):
                c += scores[i, j] >= t
        out[i] += c


@jit
def count_masked(scores, target, strict, mask, out):  # pragma: no cover - compiled
    # as count, over the columns j with mask[j] != 0 (mask (N,) uint8)
    for i in range(scores.shape[0]):
        t = target[i]
        c = 0
        if strict:
            for j in range(scores.shape[1]):
                c += (scores[i, j] > t) & (mask[j] != 0)
        else:
            for j in range(scores.shape[1]):
                c += (scores[i, j] >= t) & (mask[j] != 0)
        out[i] += c


@jit
def min_max(ids):  # pragma: no cover - compiled
    lo, hi = ids[0], ids[0]
    for i in range(1, ids.shape[0]):
        lo, hi = min(lo, ids[i]), max(hi, ids[i])
    return lo, hi


@jit
def unique(ids, mark, scan):  # pragma: no cover - compiled
    # ids (M,) int64 in range; mark (N,) int32, all -1 on entry and on return
    m = ids.shape[0]
    if scan:  # mark, then number the marked rows in increasing order
        for i in range(m):
            mark[ids[i]] = 0
        u = 0
        for r in range(mark.shape[0]):
            if mark[r] == 0:
                mark[r] = u
                u += 1
        rows = np.empty(u, np.int64)
        for i in range(m):
            rows[mark[ids[i]]] = ids[i]
    else:  # collect the first occurrences, sort them, number them
        first = np.empty(m, np.int64)
        u = 0
        for i in range(m):
            if mark[ids[i]] < 0:
                mark[ids[i]] = 0
                first[u] = ids[i]
                u += 1
        rows = np.sort(first[:u])
        for j in range(u):
            mark[rows[j]] = j
    inverse = np.empty(m, np.int64)
    for i in range(m):
        inverse[i] = mark[ids[i]]
    for j in range(rows.shape[0]):
        mark[rows[j]] = -1
    return rows, inverse


@jit
def index_add(out, index, values):  # pragma: no cover - compiled
    # out (U, D) += values (M, D) at rows index (M,), in order
    for i in range(index.shape[0]):
        r = index[i]
        for d in range(out.shape[1]):
            out[r, d] += values[i, d]


@inlined
def dot64(x, w, b):  # pragma: no cover - compiled
    # x, w (D,) float32, b float32: the exact-rank score in float64, in a fixed order (four partial
    # sums over d mod 4, then the tail), the same for every item: equal rows give equal scores
    s0 = s1 = s2 = s3 = 0.0
    n4 = x.shape[0] - x.shape[0] % 4
    for d in range(0, n4, 4):
        s0 += np.float64(x[d]) * np.float64(w[d])
        s1 += np.float64(x[d + 1]) * np.float64(w[d + 1])
        s2 += np.float64(x[d + 2]) * np.float64(w[d + 2])
        s3 += np.float64(x[d + 3]) * np.float64(w[d + 3])
    for d in range(n4, x.shape[0]):
        s0 += np.float64(x[d]) * np.float64(w[d])
    return ((s0 + s1) + (s2 + s3)) + np.float64(b)


@jit
def screen_queries(q, weight, bias, targets, q8, info):  # pragma: no cover - compiled
    # q (R, D) float32 queries -> q8 (R, D) int8 = round(q / sq); info (R, 4) float64 per row:
    # sq, ||q||_2 (A), ||q - sq q8||_2 (C), the target's float64 score (ts)
    for b in range(q.shape[0]):
        top = 0.0
        for d in range(q.shape[1]):
            top = max(top, abs(np.float64(q[b, d])))
        sq = np.float64(np.float32(top / 127.0))
        a2 = 0.0
        c2 = 0.0
        for d in range(q.shape[1]):
            x = np.float64(q[b, d])
            k = np.floor(x / sq + 0.5) if sq > 0.0 else 0.0
            k = min(127.0, max(-127.0, k))
            q8[b, d] = np.int8(k)
            a2 += x * x
            c2 += (x - sq * k) ** 2
        info[b, 0] = sq
        info[b, 1] = np.sqrt(a2)
        info[b, 2] = np.sqrt(c2)
        info[b, 3] = dot64(q[b], weight[targets[b]], bias[targets[b]])


@jit
def screen_block(acc, c0, ts, sq, ea, ec, slack, targets, st, eu, ev, bias, mask, cap, above, und, und_up,
                 und_n, flags):  # pragma: no cover - compiled
    # acc (R, C) int32 = q8 @ w8[c0:c0+C].T, one column block of the int8 product; per row sq, ea, ec,
    # slack float32, ts float64 (the target's exact score); per column st, eu, ev, bias float32, mask
    # uint8 (all N columns). Item j is certainly above row b's target when its approximate score
    # a = acc sq st_j + bias_j exceeds ts by more than the bound e = ea eu_j + ec ev_j + slack, certainly
    # below when a + e < ts. Adds the first to above (R,) and lists the undecided others in und
    # (R, L) int32 / und_up (R, L) bool (approximately above?) with their number in und_n (R,) (L + 1:
    # the list overflowed). Rows with >= cap items certainly above list nothing more. flags (C,) uint8
    # scratch: 0 decided, 1 / 2 undecided with the approximate score below / above the target's. (Loops over a whole block row: LLVM vectorises those, not 64-column chunks.)
    n_cols = acc.shape[1]
    cap_list = und.shape[1]
    c1 = c0 + n_cols  # this block's columns, indexed from 0
    st, eu, ev, bias, mask = st[c0:c1], eu[c0:c1], ev[c0:c1], bias[c0:c1], mask[c0:c1]
    for b in range(acc.shape[0]):
        t = np.float32(ts[b])
        s, a_b, c_b, sl = sq[b], ea[b], ec[b], slack[b]
        row = acc[b]
        up = 0
        band = 0
        for k in range(n_cols):  # vectorised: no branch
            a = np.float32(row[k]) * (s * st[k]) + bias[k]
            e = a_b * eu[k] + c_b * ev[k] + sl
            m = np.int64(mask[k])
            up += np.int64(a - e > t) * m
            band += np.int64(a + e >= t) * m
        above[b] += up
        tgt = targets[b] - c0
        own = 1 if (0 <= tgt < n_cols and mask[tgt] != 0) else 0  # inside its own bound
        if band - up <= own or above[b] >= cap or und_n[b] > cap_list:
            continue
        for k in range(n_cols):  # rare: flag the undecided items (vectorised), then list them
            a = np.float32(row[k]) * (s * st[k]) + bias[k]
            e = a_b * eu[k] + c_b * ev[k] + sl
            undecided = (a - e <= t) & (a + e >= t) & (mask[k] != 0)
            flags[k] = np.uint8(undecided) * np.uint8(1 + (a > t))  # 0, or 1 (below) / 2 (above) approx.
        if own:
            flags[tgt] = 0
        words = flags.view(np.uint64)
        for w in range(n_cols // 8 + (n_cols % 8 != 0)):
            if words[w] == 0:
                continue
            for k in range(8 * w, min(8 * w + 8, n_cols)):
                if flags[k] == 0:
                    continue
                if und_n[b] == cap_list:
                    und_n[b] = cap_list + 1
                    break
                und[b, und_n[b]] = c0 + k
                und_up[b, und_n[b]] = flags[k] == 2
                und_n[b] += 1


@jit
def screen_settle(q, weight, bias, ts, targets, mask, cap, above, und, und_up, und_n, out):  # pragma: no cover
    # out (R, 2) int64: per row the number of (masked) other items scoring > and == the target, from
    # screen_block's lists; the undecided items approximately above go first, so that a badly ranked
    # target reaches cap after few exact scores (its count is then only a lower bound). A row whose
    # list overflowed is scored exactly over all items.
    for b in range(q.shape[0]):
        greater = above[b]
        equal = 0
        if greater < cap and und_n[b] > und.shape[1]:
            greater = 0
            for j in range(weight.shape[0]):
                if j != targets[b] and mask[j] != 0:
                    x = dot64(q[b], weight[j], bias[j])
                    greater += x > ts[b]
                    equal += x == ts[b]
        elif greater < cap:
            for phase in (True, False):
                for i in range(und_n[b]):
                    if greater >= cap:
                        break
                    if und_up[b, i] == phase:
                        x = dot64(q[b], weight[und[b, i]], bias[und[b, i]])
                        greater += x > ts[b]
                        equal += x == ts[b]
        out[b, 0] = greater
        out[b, 1] = equal


@jit
def guided_search(cdf, guide, scale, u, out):  # pragma: no cover - compiled
    # cdf (N,) float64 non-decreasing; guide (G,) int64 with guide[g] = first i with cdf[i] > g / scale
    # (approximately: the two loops below make the result exact whatever the guide's rounding);
    # u (M,) float64; out (M,) int64 = the first i with cdf[i] > u, N when none (searchsorted right=True)
    n, g_max = cdf.shape[0], guide.shape[0] - 1
    for m in range(u.shape[0]):
        x = u[m]
        g = min(max(int(x * scale), 0), g_max)
        i = guide[g]
        while i > 0 and cdf[i - 1] > x:
            i -= 1
        while i < n and cdf[i] <= x:
            i += 1
        out[m] = i


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


@jit
def gather_columns(table, targets, samples, off_targets, off_samples, out):  # pragma: no cover - compiled
    # table (N, D); targets (B,), samples (S,) ids; off_* (N,) per-item column offsets; out (B+S, D+1):
    # out[k] = [table[id_k] | off(id_k)], off_targets for the first B columns, off_samples after
    b, n, d = targets.shape[0], targets.shape[0] + samples.shape[0], table.shape[1]
    for k in range(n):
        if k + _AHEAD < n:
            prefetch_row(table, targets[k + _AHEAD] if k + _AHEAD < b else samples[k + _AHEAD - b])
        if k < b:
            r = targets[k]
            out[k, d] = off_targets[r]
        else:
            r = samples[k - b]
            out[k, d] = off_samples[r]
        for j in range(d):
            out[k, j] = table[r, j]


@jit
def cross_entropy_grad(p, log_eps):  # pragma: no cover - compiled
    # p (B, C) softmax probabilities, row i's target in column i -> in place d loss / d logits, where
    # loss = mean_i -log(p_ii + eps) written as -log eps - softplus(log p_ii - log eps) (sessrec.training.losses);
    # returns the loss. d / d z_ij = w_i (p_ij - [i == j]), w_i = sigmoid(log p_ii - log eps) / B.
    batch = p.shape[0]
    total = 0.0
    for i in range(batch):
        x = np.log(p[i, i]) - log_eps
        softplus = x if x > 20.0 else np.log1p(np.exp(x))  # torch's softplus (threshold 20)
        total += -log_eps - softplus
        w = np.float32(1.0 / (1.0 + np.exp(-x)) / batch)
        for j in range(p.shape[1]):
            p[i, j] *= w
        p[i, i] -= w
    return total / batch


@jit
def row_update(p, acc, mom, rows, inverse, grad_in, grad_cols, values, lr, momentum, eps,
               has_mom):  # pragma: no cover - compiled
    # The shared table's row-wise update from the step's two gradient parts: grad_in (B, H) for the
    # input rows (columns :H), then grad_cols (C, D) for the scored rows, summed into values (>=U, D)
    # at rows inverse[:B] and inverse[B:] (autograd's order), then `sparse` on the U unique rows.
    u, batch, d = rows.shape[0], grad_in.shape[0], p.shape[1]
    out = values[:u]
    out[:] = 0.0
    for i in range(batch):
        r = inverse[i]
        for j in range(grad_in.shape[1]):
            out[r, j] += grad_in[i, j]
    for i in range(grad_cols.shape[0]):
        r = inverse[batch + i]
        for j in range(d):
            out[r, j] += grad_cols[i, j]
    sparse_rows(p, acc, mom, rows, out, lr, momentum, eps, has_mom)


@jit
def bpr_max_grad(x, r, s, sig, elu_param, bpreg, eps, grad):  # pragma: no cover - compiled
    # BPR-max over (B, C) with row i's target in column i (sessrec.training.losses.bpr_max), every row active:
    # x the scores, r = ELU(x) (x itself when elu_param == 0), s the softmax of r over each row with the
    # target excluded (s_ii = 0), sig = sigmoid(r_ii - r). Per row, A = sum_j s_j sig_j,
    # R = sum_j s_j r_j^2, loss_i = -log(A + eps) + bpreg R. Writes d mean_i loss_i / d x into grad and
    # returns the mean loss. d loss_i / d r_j = -(s_j (sig_j - A) - s_j sig_j (1 - sig_j)) / (A + eps)
    # + bpreg (s_j (r_j^2 - R) + 2 s_j r_j) for j != i, and -sum_j s_j sig_j (1 - sig_j) / (A + eps) for
    # the target; d r / d x = 1 where x > 0, r + elu_param elsewhere (the ELU's derivative).
    batch, n = x.shape
    total = 0.0
    for i in range(batch):
        a = 0.0
        reg = 0.0
        dt = 0.0
        for j in range(n):
            sj, gj, rj = s[i, j], sig[i, j], r[i, j]
            a += sj * gj
            reg += sj * rj * rj
            dt += sj * gj * (1.0 - gj)
        total += -np.log(a + eps) + bpreg * reg
        inv = 1.0 / (a + eps)
        for j in range(n):
            sj, gj, rj = s[i, j], sig[i, j], r[i, j]
            g = -inv * (sj * (gj - a) - sj * gj * (1.0 - gj)) + bpreg * (sj * (rj * rj - reg) + 2.0 * sj * rj)
            if j == i:
                g -= inv * dt
            if elu_param > 0.0 and x[i, j] <= 0.0:
                g *= rj + elu_param
            grad[i, j] = g / batch
    return total / batch
