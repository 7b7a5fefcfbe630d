"""p-RNN at catalogue scale on CPU: a 700,000-item catalogue with a 1,000,000-dim sparse text feature.

    OMP_NUM_THREADS=1 python benchmarks/prnn_scale.py --model id --steps 2000
    OMP_NUM_THREADS=1 python benchmarks/prnn_scale.py --model id+text --steps 2000

One model per process, so `ru_maxrss` is that model's peak. The loop is the module's training step
without the Trainer: forward over B + n_sample columns (targets + popularity samples), cross-entropy,
backward, `AdagradMomentum` step with row-sparse item and term tables. Inputs and targets are drawn by
Zipf(1) popularity (no session structure: a speed and memory check, not an accuracy one).
Models: "id" = GRU4Rec shared embedding, 100 units; "id+text" = ParallelRNN with an id subnet (100) and a
sparse_text subnet (100-dim term embeddings, 100 units), concat fusion.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from sessrec.training.sampler import PopularitySampler
from sessrec.encoders import Catalogue, ItemIdEncoder, SparseTextEncoder
from sessrec.features import write_sparse
from sessrec.training.losses import loss_by_name
from sessrec.models.gru4rec import GRU4Rec
from sessrec.models.prnn import ParallelRNN
from sessrec.training.optim import AdagradMomentum


def text_matrix(n_items: int, vocab: int, nnz: float, seed: int) -> sp.csr_matrix:
    """(N, V) CSR, 1 + Poisson(nnz - 1) Zipf-drawn terms per row, L2-normalised rows."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(nnz - 1.0, size=n_items)  # (N,)
    cols = np.minimum(rng.zipf(1.1, size=counts.sum()) - 1, vocab - 1)  # (M,)
    cols = (cols * 2654435761) % vocab  # spread the head terms over the vocabulary
    indptr = np.concatenate([[0], np.cumsum(counts)])
    m = sp.csr_matrix((rng.random(len(cols)).astype(np.float32) + 0.1, cols, indptr), shape=(n_items, vocab))
    m.sum_duplicates()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1))).ravel()  # (N,)
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m, dtype=np.float32)


def build(model: str, n_items: int, vocab: int, nnz: float, folder: Path) -> torch.nn.Module:
    if model == "id":
        return GRU4Rec(n_items, [100])
    ids = np.arange(n_items).astype(str)
    encoders = {"id": ItemIdEncoder(100)}
    if model == "id+text":
        write_sparse(folder / "text.npz", text_matrix(n_items, vocab, nnz, 0), ids)
        encoders["text"] = SparseTextEncoder("text.npz", dim=100)
    return ParallelRNN(n_items, encoders, [100], catalogue=Catalogue(ids.astype(object), folder))


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        net = build(args.model, args.n_items, args.vocab, args.nnz, Path(tmp))
    counts = np.maximum(1, (1e6 / np.arange(1, args.n_items + 1)).astype(np.int64))  # (N,) Zipf(1)
    sampler = PopularitySampler(counts, 0.5, args.n_sample, 2_000_000, seed=0)
    draws = PopularitySampler(counts, 1.0, args.batch_size, 2_000_000, seed=1)
    opt = AdagradMomentum(net.parameters(), lr=0.1)
    loss_fn = loss_by_name("cross-entropy")
    hidden = net.init_hidden(args.batch_size)
    inputs = draws.sample()  # (B,)
    start = None
    for step in range(args.steps + args.warmup):
        if step == args.warmup:
            start = time.perf_counter()
        targets = draws.sample()  # (B,)
        scores, hidden = net(inputs, hidden, torch.cat([targets, sampler.sample()]))  # (B, B+S)
        loss = loss_fn(scores)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hidden, inputs = [h.detach() for h in hidden], targets
    seconds = time.perf_counter() - start
    return {
        "model": args.model, "n_items": args.n_items, "vocab": args.vocab, "steps": args.steps,
        "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
        "events_per_s": round(args.steps * args.batch_size / seconds),
        "ms_per_step": round(1000 * seconds / args.steps, 2),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["id", "id-prnn", "id+text"], default="id+text")
    parser.add_argument("--n-items", type=int, default=700_000)
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--nnz", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-sample", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
