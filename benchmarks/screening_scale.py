"""Exact ranking by int8 screening (`sessrec.evaluation.screening`) against dense scores on a large catalogue.

Random item table [W | b] (N, D+1) with entries N(0, 0.15^2) and queries tanh(2 z); `--good` of the
queries get a target among their 50 best items (so the ranks <= 20 that Recall@20 / MRR@20 need are
exercised), the others a random target. Reports microseconds per query for `ScreenedTable.ranks`
(max_rank 20, as the evaluation loop calls it) and for the dense path (`score_rows` + `target_ranks`),
checks that both agree wherever the rank is <= 20, and prints the peak RSS.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/screening_scale.py [--items 700000] [--dim 100]
[--queries 512] [--good 300]``
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from sessrec import runtime
from sessrec.evaluation.metrics import target_ranks
from sessrec.models.rows import score_rows
from sessrec.evaluation.screening import ScreenedTable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=700_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--good", type=int, default=300)
    args = parser.parse_args(argv)
    runtime.tune_malloc()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, d, b = args.items, args.dim, args.queries
    table = torch.randn(n, d + 1) * 0.15  # (N, D+1)
    query = torch.tanh(torch.randn(b, d) * 2)  # (B, D)
    targets = torch.randint(0, n, (b,))
    best = (query[: args.good] @ table[:, :-1].t() + table[:, -1]).topk(50, dim=1).indices  # (G, 50)
    targets[: args.good] = best[torch.arange(args.good), torch.randint(0, 50, (args.good,))]
    t0 = time.perf_counter()
    screened = ScreenedTable(table)
    print(f"prepare the table: {time.perf_counter() - t0:.2f} s")
    screened.ranks(query[:8], targets[:8], "conservative", max_rank=20)  # kernels loaded / compiled
    t0 = time.perf_counter()
    got = screened.ranks(query, targets, "conservative", max_rank=20)
    print(f"screened: {(time.perf_counter() - t0) / b * 1e6:.1f} us a query")
    t0 = time.perf_counter()
    want = target_ranks(score_rows(F.pad(query, (0, 1), value=1.0), table), targets, "conservative")
    print(f"dense:    {(time.perf_counter() - t0) / b * 1e6:.1f} us a query")
    inside = want <= 20
    same = torch.equal(got[inside], want[inside]) and bool((got[~inside] > 20).all())
    print(f"ranks <= 20: {int(inside.sum())} of {b}; screened agrees: {same}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
