"""GRU4Rec training and evaluation speed (issue 3), on a deterministic synthetic data set.

Data (generated here, cached by its parameters): ``--events`` events over ``--items`` items with Zipf
popularity (exponent 1), sessions of geometric length (>= 2, mean ~5) starting uniformly over 30 days;
the next item is one of the current item's 3 fixed successors with probability 0.5 (so accuracy is
meaningful), otherwise a popularity draw. Test = sessions starting in the last 2 days (items restricted
to the training items), valid = the day before; training uses train_full. Written with
``sessrec.data.prepared.write_prepared``.

Configuration (the reference's CPU speed setting): cross-entropy, logq 1, layers [100], batch 64,
n_sample 2048, sample_alpha 0.5, dropout_hidden 0.4, dropout_embed 0, lr 0.2, momentum 0.2, shared
embedding, 1 epoch. Measured per repeat (medians reported):

1. training events/s through ``lightning.Trainer.fit`` (SessionRecModule + SessionDataModule; logger,
   checkpointing, progress bar and validation off); events = active (input, target) pairs of the epoch.
   "epoch" times the epoch only (a callback), "fit" the whole ``fit`` call (set-up: sampler cache).
   The default module takes the fused step (`sessrec.training.fused`); "trainer_autograd" is the same fit with
   ``fused_step=False`` (loss.backward() and optimizer.step()), measured in the same repeat.
2. the same training loop without Lightning: SessionParallelIterator blocks, the module's own net,
   loss, sampler and optimiser objects, the inner loop of ``SessionRecModule.training_step`` replicated
   (the fused step on full steps, as the Trainer's module).
Before the repeats a few unmeasured batches load the numba kernels (compiled once per install).
3. evaluation events/s over all items: ``Trainer.test`` on the test split, eval_batch_size 512 and 64.
4. peak RSS (``ru_maxrss``) of a separate process that does what one job does: one fit (fused) and one
   test. (The benchmark's own process, which fits 3 models per repeat, also reports its peak: glibc keeps
   freed memory in the heap, see `sessrec.runtime.tune_malloc`, so that figure grows with the repeats.)
5. Recall@20 / MRR@20 (conservative ties, all items) on the test split after the Trainer epoch.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/gru4rec_speed.py [--quick] [--events N] [--items N]
[--repeats 3] [--threads 1] [--skip-plain] [--skip-autograd] [--out result.json] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DAY = 86400.0
CONFIG = dict(
    loss="cross-entropy", logq=1.0, layers=[100], batch_size=64, n_sample=2048, sample_alpha=0.5,
    dropout_hidden=0.4, dropout_embed=0.0, lr=0.2, momentum=0.2, input_mode="shared", epochs=1,
)


# ---- data ---------------------------------------------------------------------------------------
def generate(n_events: int, n_items: int, seed: int = 0, days: float = 30.0, test_days: float = 2.0,
             valid_days: float = 1.0, n_successors: int = 3, p_succ: float = 0.5, mean_len: float = 5.0):
    """Deterministic session data; returns (splits: dict name -> DataFrame, item_ids, meta)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)  # Zipf(1) over a random item permutation
    pop = pop[rng.permutation(n_items)]
    cdf = np.cumsum(pop / pop.sum())
    succ = np.searchsorted(cdf, rng.random((n_items, n_successors)))  # (N, k) popular successors
    n_sessions = int(n_events / mean_len)
    lengths = 1 + rng.geometric(1.0 / (mean_len - 1.0), n_sessions)  # >= 2, mean ~mean_len
    starts = np.sort(rng.random(n_sessions) * days * DAY)  # (S,) sessions in start order
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.empty(offsets[-1], np.int64)
    cur = np.searchsorted(cdf, rng.random(n_sessions))  # (S,) first items
    items[offsets[:-1]] = cur
    for k in range(1, int(lengths.max())):
        alive = np.flatnonzero(lengths > k)  # sessions with a k-th event
        prev = items[offsets[alive] + k - 1]
        use_succ = rng.random(alive.size) < p_succ
        nxt = np.where(
            use_succ,
            succ[prev, rng.integers(0, n_successors, alive.size)],
            np.searchsorted(cdf, rng.random(alive.size)),
        )
        items[offsets[alive] + k] = nxt
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    times = np.repeat(starts, lengths) + 60.0 * pos
    sess = np.repeat(np.arange(n_sessions), lengths)

    t_test = days * DAY - test_days * DAY
    t_valid = t_test - valid_days * DAY

    def frame(mask_sessions: np.ndarray, keep_items: np.ndarray | None) -> pd.DataFrame:
        ev = mask_sessions[sess]
        s, it, tm = sess[ev], items[ev], times[ev]
        if keep_items is not None:  # drop unseen items, then sessions left with < 2 events
            ok = keep_items[it]
            s, it, tm = s[ok], it[ok], tm[ok]
            _, inv, cnt = np.unique(s, return_inverse=True, return_counts=True)
            ok = cnt[inv] >= 2
            s, it, tm = s[ok], it[ok], tm[ok]
        new = np.ones(len(s), bool)
        new[1:] = s[1:] != s[:-1]
        return pd.DataFrame({"session": np.cumsum(new) - 1, "item": it, "time": tm})

    train_full = frame(starts < t_test, None)
    seen = np.zeros(n_items, bool)
    seen[train_full["item"].to_numpy()] = True
    remap = np.cumsum(seen) - 1  # item index space = train_full's items
    train = frame(starts < t_valid, None)
    seen_train = np.zeros(n_items, bool)
    seen_train[train["item"].to_numpy()] = True
    splits = {
        "train_full": train_full,
        "train": train,
        "valid": frame((starts >= t_valid) & (starts < t_test), seen_train),
        "test": frame(starts >= t_test, seen),
    }
    for f in splits.values():
        f["item"] = remap[f["item"].to_numpy()].astype(np.int32)
    item_ids = np.array([f"i{j}" for j in np.flatnonzero(seen)], dtype=object)
    meta = {"source": "benchmarks/gru4rec_speed.py", "options": dict(
        n_events=n_events, n_items=n_items, seed=seed, days=days, test_days=test_days,
        valid_days=valid_days, n_successors=n_successors, p_succ=p_succ, mean_len=mean_len)}
    return splits, item_ids, meta


def prepared_dir(n_events: int, n_items: int, cache: Path) -> Path:
    from sessrec.data.prepared import write_prepared

    out = cache / f"speed-e{n_events}-i{n_items}-s0"
    if not (out / "meta.json").is_file():
        t0 = time.perf_counter()
        splits, item_ids, meta = generate(n_events, n_items)
        write_prepared(out, splits, item_ids, meta, overwrite=True)
        print(f"generated {out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


# ---- measurements -------------------------------------------------------------------------------
def build(n_items: int, fused: bool = True):
    import inspect

    from sessrec.models.gru4rec import GRU4Rec
    from sessrec.training.module import SessionRecModule

    c = CONFIG
    net = GRU4Rec(n_items, layers=c["layers"], input_mode=c["input_mode"], dropout_embed=c["dropout_embed"],
                  dropout_hidden=c["dropout_hidden"])
    extra = {"fused_step": fused} if "fused_step" in inspect.signature(SessionRecModule).parameters else {}
    return SessionRecModule(net, loss=c["loss"], logq=c["logq"], n_sample=c["n_sample"],
                            sample_alpha=c["sample_alpha"], lr=c["lr"], momentum=c["momentum"], cutoffs=[20],
                            **extra)  # (older checkouts, for A/B runs, have no fused step)


def trainer(**kw):
    import lightning as L

    return L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kw,
    )


def _epoch_timer():
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: dict[str, float] = {}

        def on_train_epoch_start(self, *a) -> None:
            self._t = time.perf_counter()

        def on_train_epoch_end(self, *a) -> None:
            self.seconds["train"] = time.perf_counter() - self._t

        def on_test_epoch_start(self, *a) -> None:
            self._t = time.perf_counter()

        def on_test_epoch_end(self, *a) -> None:
            self.seconds["test"] = time.perf_counter() - self._t

    return EpochTimer()


def fit_with_trainer(data_dir: Path, seed: int, fused: bool = True) -> tuple[Any, dict[str, float]]:
    import torch

    from sessrec.data.datamodule import SessionDataModule

    torch.manual_seed(seed)
    dm = SessionDataModule(str(data_dir), batch_size=CONFIG["batch_size"], train_split="train_full")
    module = build(dm.n_items, fused)
    timer = _epoch_timer()
    tr = trainer(max_epochs=CONFIG["epochs"], callbacks=[timer])
    t0 = time.perf_counter()
    tr.fit(module, datamodule=dm)
    return module, {"fit_s": time.perf_counter() - t0, "epoch_s": timer.seconds["train"]}


def fit_plain(data_dir: Path, seed: int) -> dict[str, float]:
    """The training epoch without Lightning: the same objects, training_step's inner loop replicated,
    with the fused step where the Trainer uses it (`sessrec.training.fused`, full steps) and autograd elsewhere."""
    import torch

    from sessrec.data.batching import SessionParallelIterator
    from sessrec.data.prepared import PreparedData
    from sessrec.training.sampler import PopularitySampler
    from sessrec.training.sampler import log_q_columns
    from sessrec.training.optim import AdagradMomentum
    from sessrec.training.steps import substep_loss

    torch.manual_seed(seed)
    data = PreparedData.load(data_dir)
    split = data.split("train_full")
    module = build(data.n_items)
    net, loss_fn, hp = module.net, module.loss_fn, module.hparams
    t0 = time.perf_counter()
    counts = torch.as_tensor(data.counts("train_full"), dtype=torch.float64)
    log_pop = counts.clamp_min(1).log().float()  # as SessionRecModule.setup
    sampler = PopularitySampler(counts.numpy(), hp.sample_alpha, hp.n_sample, hp.sample_cache_size, seed=seed)
    opt = AdagradMomentum(net.parameters(), lr=hp.lr, momentum=hp.momentum)
    fused = None
    try:  # the step the Trainer takes (older checkouts have none)
        from sessrec.training.fused import FusedGRU4RecStep

        fused = FusedGRU4RecStep(net, opt, hp.logq, log_pop, hp.sample_alpha)
    except (ImportError, ValueError):
        pass
    setup_s = time.perf_counter() - t0
    net.train()
    t0 = time.perf_counter()
    hidden = None
    for block in SessionParallelIterator(split.items, split.offsets, CONFIG["batch_size"], 32):
        steps, batch = block.inputs.shape
        if hidden is None:
            hidden = net.init_hidden(batch)
        full = block.n_events == steps * batch
        total = torch.zeros(())
        for t in range(steps):
            keep = (~block.reset[t]).unsqueeze(1).to(total.dtype)
            hidden = [h * keep for h in hidden]
            inputs, targets = block.inputs[t], block.targets[t]
            active = None if full else block.active[t]
            samples = sampler.sample()
            if full and fused is not None:
                loss, hidden = fused(inputs, targets, samples, hidden)
                total += loss
                continue
            log_q = log_q_columns(log_pop, targets, samples, hp.sample_alpha) if hp.logq else None
            loss, hidden = substep_loss(net, loss_fn, inputs, targets, hidden, active, samples, log_q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hidden = [h.detach() for h in hidden]
            total += loss.detach()
    return {"epoch_s": time.perf_counter() - t0, "setup_s": setup_s}


def evaluate(module, data_dir: Path, eval_batch_size: int) -> tuple[dict[str, float], dict[str, float]]:
    from sessrec.data.datamodule import SessionDataModule

    dm = SessionDataModule(str(data_dir), batch_size=CONFIG["batch_size"], eval_batch_size=eval_batch_size,
                           train_split="train_full", test_split="test")
    timer = _epoch_timer()
    tr = trainer(callbacks=[timer])
    t0 = time.perf_counter()
    (res,) = tr.test(module, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in res.items()}, {"test_s": time.perf_counter() - t0, "epoch_s": timer.seconds["test"]}


def warm_up(data_dir: Path) -> None:
    """Load (or, after an install or a code change, compile: ~10 s) the numba kernels before timing:
    a few training and evaluation batches, not measured."""
    from sessrec.data.datamodule import SessionDataModule

    dm = SessionDataModule(str(data_dir), batch_size=CONFIG["batch_size"], train_split="train_full",
                           test_split="test")
    module = build(dm.n_items)
    trainer(max_epochs=1, limit_train_batches=2).fit(module, datamodule=dm)
    trainer(limit_test_batches=2).test(module, datamodule=dm, verbose=False)


def pairs(data_dir: Path, split_name: str, batch_size: int) -> int:
    from sessrec.data.batching import SessionParallelIterator
    from sessrec.data.prepared import PreparedData

    s = PreparedData.load(data_dir).split(split_name)
    return SessionParallelIterator(s.items, s.offsets, batch_size).n_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="~100K events, 1 repeat: a smoke run")
    parser.add_argument("--skip-plain", action="store_true", help="skip the loop without the Trainer")
    parser.add_argument("--skip-autograd", action="store_true", help="skip the Trainer run with fused_step=False")
    parser.add_argument("--job-rss", action="store_true",
                        help="(internal) one fit and one test in this process; print its peak RSS")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "sessrec-bench"))
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 100_000, 1
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import logging
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from sessrec import runtime

    malloc_tuned = runtime.tune_malloc()  # as `python -m sessrec` does
    gc_tuned = hasattr(runtime, "tune_gc") and runtime.tune_gc()  # (older checkouts, for A/B runs, lack it)

    data_dir = prepared_dir(args.events, args.items, Path(args.cache))
    if args.job_rss:
        module, _ = fit_with_trainer(data_dir, seed=0)
        evaluate(module, data_dir, 512)
        print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return 0
    meta = json.loads((data_dir / "meta.json").read_text())
    n_train = pairs(data_dir, "train_full", CONFIG["batch_size"])
    n_test = pairs(data_dir, "test", 512)
    warm_up(data_dir)
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        run: dict[str, Any] = {}
        module, run["trainer"] = fit_with_trainer(data_dir, seed=r)
        if not args.skip_autograd:
            _, run["trainer_autograd"] = fit_with_trainer(data_dir, seed=r, fused=False)
        if not args.skip_plain:
            run["plain"] = fit_plain(data_dir, seed=r)
        for bs in (512, 64):
            metrics, run[f"eval_{bs}"] = evaluate(module, data_dir, bs)
            run[f"metrics_{bs}"] = metrics
        runs.append(run)
        print(f"repeat {r}: {json.dumps(run)}", file=sys.stderr, flush=True)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    job = subprocess.run(
        [sys.executable, __file__, "--job-rss", "--events", str(args.events), "--items", str(args.items),
         "--threads", str(args.threads), "--cache", args.cache], capture_output=True, text=True, check=True)
    job_rss_mib = json.loads(job.stdout.strip().splitlines()[-1])["peak_rss_mib"]

    def med(path: list[str]) -> float:
        vals = []
        for run in runs:
            v: Any = run
            for p in path:
                v = v[p]
            vals.append(v)
        return statistics.median(vals)

    res: dict[str, Any] = {
        "config": CONFIG, "threads": args.threads, "repeats": args.repeats, "malloc_tuned": malloc_tuned, "gc_tuned": gc_tuned,
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "data": {"dir": str(data_dir), "splits": meta["splits"], "n_items": meta["n_items"],
                 "train_pairs": n_train, "test_pairs": n_test},
        "runs": runs,
    }
    tr_epoch, tr_fit = med(["trainer", "epoch_s"]), med(["trainer", "fit_s"])
    from sessrec.data.batching import SessionParallelIterator
    from sessrec.data.prepared import PreparedData

    s = PreparedData.load(data_dir).split("train_full")
    steps = SessionParallelIterator(s.items, s.offsets, CONFIG["batch_size"]).total_steps
    summary = {
        "train_steps": steps,
        "trainer_epoch_s": tr_epoch, "trainer_fit_s": tr_fit,
        "trainer_events_per_s": n_train / tr_epoch, "trainer_fit_events_per_s": n_train / tr_fit,
        "trainer_ms_per_step": 1000 * tr_epoch / steps,
        "eval_512_events_per_s": n_test / med(["eval_512", "epoch_s"]),
        "eval_64_events_per_s": n_test / med(["eval_64", "epoch_s"]),
        "eval_512_test_call_s": med(["eval_512", "test_s"]),
        "eval_64_test_call_s": med(["eval_64", "test_s"]),
        "recall@20": med(["metrics_512", "test_recall@20"]), "mrr@20": med(["metrics_512", "test_mrr@20"]),
        "recall@20_bs64": med(["metrics_64", "test_recall@20"]), "mrr@20_bs64": med(["metrics_64", "test_mrr@20"]),
        "peak_rss_mib": job_rss_mib, "benchmark_process_peak_rss_mib": peak_rss_mib,
    }
    if not args.skip_autograd:
        ag = med(["trainer_autograd", "epoch_s"])
        summary |= {"trainer_autograd_epoch_s": ag, "trainer_autograd_events_per_s": n_train / ag,
                    "trainer_autograd_ms_per_step": 1000 * ag / steps,
                    "autograd_over_fused_time": statistics.median(
                        run["trainer_autograd"]["epoch_s"] / run["trainer"]["epoch_s"] for run in runs)}
    if not args.skip_plain:
        pl = med(["plain", "epoch_s"])
        summary |= {"plain_epoch_s": pl, "plain_events_per_s": n_train / pl, "plain_ms_per_step": 1000 * pl / steps,
                    "trainer_over_plain_time": statistics.median(
                        run["trainer"]["epoch_s"] / run["plain"]["epoch_s"] for run in runs)}
    res["summary"] = summary
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
