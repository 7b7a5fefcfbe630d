"""Training and evaluation at paper scale (issue 17): GRU4Rec and a p-RNN (id + sparse text) through the CLI.

    python -m sessrec generate --preset paper-video --out /tmp/gen-full
    python -m sessrec prepare /tmp/gen-full/events.tsv --format gru4rec --out /tmp/prep-full2
    OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/full_scale.py --model gru4rec \\
        --data /tmp/prep-full2 --blocks 1000 --epochs 2 --test-blocks 8 --out /tmp/full-gru4rec.json
    OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/full_scale.py --model prnn-text \\
        --data /tmp/prep-full2 --text /tmp/gen-full/text.npz --blocks 400 --epochs 2 --test-blocks 8 \\
        --out /tmp/full-prnn-text.json

One model per process. The run is the one `python -m sessrec fit` / `test` makes: the config below
(written to <out>.yaml, e.g. for `python -m sessrec fit --config <out>.yaml`) goes through `SessrecCLI`
(the project's LightningCLI, with the process settings of `sessrec.cli.main`: malloc and GC tuning,
encoder discovery), then `trainer.fit` and `trainer.test` on the objects it built, in one process.
Training: `--epochs` epochs of `--blocks` blocks each (`trainer.limit_train_batches`); a block is
`steps_per_block` (32) session-parallel steps of batch 64, so an epoch trains on the first
blocks x 32 x 64 (input, target) slots of train_full, each epoch from the start of the split.
Test: the first `--test-blocks` blocks of the test split (batch 512, 32 steps a block; 0 = the whole
split), ranked against all items, conservative ties.

Models (the settings of configs/gru4rec/synthetic.yaml and configs/model/prnn.yaml): cross-entropy, logQ 1,
n_sample 2048, sample_alpha 0.5, batch 64, dropout_hidden 0.2, AdagradMomentum, 100 units.
"gru4rec" = GRU4Rec, shared embedding (the fused CPU step, as the module picks it), lr 0.1;
"prnn-text" = ParallelRNN with an id subnet (100) and a SparseTextEncoder subnet (`--text`, 100-dim term
embeddings, row-sparse term gradient), concat fusion, lr 0.05 (0.1 x 100 / 200 units).

Reported (JSON on stdout and in --out): setup seconds (CLI parse + model build, then fit's set-up up to
the first training block: split loading, catalogue binding, sampler, epoch length), per epoch the
training seconds, events (active (input, target) pairs) and RSS at its start and end, events/s over
all training epochs (events / training seconds, set-up excluded) and over the blocks after the first
`--warmup` ones of epoch 1, the projected full-epoch time (train_full pairs / events/s), test seconds,
events, events/s (also without the first block, which builds the ranking table) and the fraction of the
test split's pairs evaluated, the test metrics (Recall@k, MRR@k), and the peak RSS of the
process (`ru_maxrss`; /usr/bin/time -v gives the same from outside).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from sessrec.encoders.registry import discover  # noqa: E402
from sessrec.lightning_cli import SessrecCLI  # noqa: E402
from sessrec.runtime import tune_gc, tune_malloc  # noqa: E402

T_IMPORTED = time.perf_counter()
MiB = 1024 * 1024


def rss_mib() -> dict[str, float]:
    """Current (VmRSS) and peak-so-far (VmHWM) resident memory of this process, MiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return {"rss": out.get("VmRSS", float("nan")), "hwm": out.get("VmHWM", float("nan"))}


def config(args: argparse.Namespace) -> dict:
    """The fit/test config of `args.model` (what a --config file would hold)."""
    net: dict
    if args.model == "gru4rec":
        net = {"class_path": "sessrec.models.gru4rec.GRU4Rec",
               "init_args": {"layers": [100], "input_mode": "shared", "dropout_embed": 0.0,
                             "dropout_hidden": 0.2}}
        lr = 0.1
    else:
        net = {"class_path": "sessrec.models.prnn.ParallelRNN",
               "init_args": {"encoders": {
                   "id": {"class_path": "ItemIdEncoder", "init_args": {"dim": 100}},
                   "text": {"class_path": "SparseTextEncoder",
                            "init_args": {"path": str(Path(args.text).absolute()), "dim": 100}}},
                   "layers": [100], "fusion": "concat", "dropout_hidden": 0.2}}
        lr = 0.05
    root = str(Path(args.out).with_suffix("")) + "-run"
    return {
        "seed_everything": args.seed,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": args.epochs, "limit_train_batches": args.blocks,
            "limit_val_batches": 0, "limit_test_batches": args.test_blocks or 1.0, "logger": False,
            "enable_checkpointing": args.checkpoint, "enable_progress_bar": False,
            "default_root_dir": root,
        },
        "model": {"class_path": "sessrec.training.module.SessionRecModule",
                  "init_args": {"net": net, "loss": "cross-entropy", "logq": 1.0, "n_sample": 2048,
                                "sample_alpha": 0.5, "lr": lr, "momentum": 0.0, "cutoffs": [1, 5, 10, 20]}},
        "data": {"data_dir": str(Path(args.data).absolute()), "batch_size": 64, "eval_batch_size": 512,
                 "steps_per_block": 32, "train_split": "train_full", "test_split": "test"},
    }


class Probe(L.Callback):
    """Wall clock, events and RSS at the points of a fit and a test."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.marks: dict[str, float] = {}
        self.epochs: list[dict] = []
        self.test: dict = {}
        self._events = 0
        self.steady: dict = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # before the module's set-up (training split, sampler) and catalogue binding
            self.marks["setup"] = time.perf_counter()
            self.marks["rss_setup"] = rss_mib()["rss"]

    def on_fit_start(self, trainer, pl_module) -> None:
        self.marks["fit_start"] = time.perf_counter()
        self.marks["rss_fit_start"] = rss_mib()["rss"]

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks["train_start"] = time.perf_counter()
        self.marks["rss_train_start"] = rss_mib()["rss"]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._events = 0
        self.epochs.append({"epoch": trainer.current_epoch, "rss_start_MiB": rss_mib()["rss"],
                            "t0": time.perf_counter()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._events += batch.n_events
        if trainer.current_epoch == 0 and batch_idx + 1 == self.warmup:
            self.steady = {"t0": time.perf_counter(), "events0": self._events}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now, e = time.perf_counter(), self.epochs[-1]
        e.update(seconds=round(now - e.pop("t0"), 2), blocks=trainer.num_training_batches,
                 steps=pl_module.global_substep, events=self._events, rss_end_MiB=rss_mib()["rss"])
        if trainer.current_epoch == 0 and self.steady:
            self.steady.update(seconds=now - self.steady["t0"], events=self._events - self.steady["events0"])

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._events = 0
        self.test = {"t0": time.perf_counter(), "rss_start_MiB": rss_mib()["rss"]}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._events += batch.n_events
        if batch_idx == 0:  # the first block also builds the ranking table: left out of the steady rate
            now = time.perf_counter()
            self.test.update(first_block_s=round(now - self.test["t0"], 2), t1=now, events1=self._events)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        now, t1, events1 = time.perf_counter(), self.test.pop("t1"), self.test.pop("events1")
        steady = (self._events - events1) / (now - t1) if self._events > events1 else None
        self.test.update(seconds=round(now - self.test.pop("t0"), 2), events=self._events,
                         blocks=batch_count(trainer), rss_end_MiB=rss_mib()["rss"],
                         steady_events_per_s=round(steady) if steady else None)


def batch_count(trainer) -> int:
    n = trainer.num_test_batches
    return int(n[0] if isinstance(n, list) else n)


def pairs(split) -> int:
    """(input, target) pairs of a split: sessions of L >= 2 events give L - 1."""
    lengths = np.diff(split.offsets)  # (S,)
    return int((lengths[lengths >= 2] - 1).sum())


def text_vocab(model) -> int | None:
    """Terms of the model's sparse text table (None without one)."""
    from sessrec.encoders import SparseTextEncoder

    found = [int(m.weight.shape[0]) for m in model.modules() if isinstance(m, SparseTextEncoder)]
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["gru4rec", "prnn-text"], required=True)
    parser.add_argument("--data", required=True, help="prepared data folder (`sessrec prepare`)")
    parser.add_argument("--text", default="/tmp/gen-full/text.npz", help="text.npz of the generated log")
    parser.add_argument("--blocks", type=int, default=60, help="training blocks per epoch (32 steps each)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-blocks", type=int, default=8, help="test blocks (512 x 32 steps); 0: all")
    parser.add_argument("--warmup", type=int, default=3, help="blocks of epoch 1 left out of the steady rate")
    parser.add_argument("--checkpoint", action="store_true", help="save last.ckpt after each epoch")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="full-scale.json")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI reads its arguments from `args=` below, not the script's

    tune_malloc()  # what `python -m sessrec` does before a Lightning command
    tune_gc()
    discover()
    cfg = config(args)
    cfg_path = Path(args.out).with_suffix(".yaml")
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if args.checkpoint:  # what configs/trainer/default.yaml adds
        cfg["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                        "init_args": {"save_last": True, "save_top_k": 0,
                                                      "enable_version_counter": False}}]
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    t_cli = time.perf_counter()
    rss_cli = rss_mib()["rss"]
    cli = SessrecCLI(args=["--config", str(cfg_path)], run=False)
    t_built = time.perf_counter()
    probe = Probe(args.warmup)
    cli.trainer.callbacks.append(probe)
    model, dm = cli.model, cli.datamodule
    cli.trainer.fit(model, datamodule=dm)
    t_fit = time.perf_counter()
    metrics = cli.trainer.test(model, datamodule=dm, verbose=False)[0]
    t_end = time.perf_counter()

    m, epochs = probe.marks, probe.epochs
    train_s = sum(e["seconds"] for e in epochs)
    train_events = sum(e["events"] for e in epochs)
    rate = train_events / train_s
    st = probe.steady
    steady = st["events"] / st["seconds"] if st.get("seconds") else None
    full_pairs = pairs(dm.data.split("train_full"))
    test_pairs = pairs(dm.data.split("test"))
    splits = dm.data.meta["splits"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "model": args.model,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "fused_step": model._fast is not None,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "data": {"dir": str(args.data), "items": dm.n_items,
                 "train_full_events": splits["train_full"]["events"],
                 "train_full_sessions": splits["train_full"]["sessions"], "train_full_pairs": full_pairs,
                 "test_events": splits["test"]["events"], "test_pairs": test_pairs,
                 "text_vocab": text_vocab(model)},
        "import_s": round(T_IMPORTED - T_START, 2),
        "cli_build_s": round(t_built - t_cli, 2),
        "module_setup_s": round(m["fit_start"] - m["setup"], 2),  # split load, sampler, catalogue binding
        "loader_setup_s": round(m["train_start"] - m["fit_start"], 2),  # epoch iterator and its length
        "setup_s": round(m["train_start"] - t_cli, 2),
        "rss_MiB": {"before_cli": rss_cli, "setup": m["rss_setup"], "fit_start": m["rss_fit_start"],
                    "train_start": m["rss_train_start"]},
        "epochs": epochs,
        "train_steps": sum(e["blocks"] for e in epochs) * cli.datamodule.steps_per_block,
        "train_events": train_events,
        "train_s": round(train_s, 2),
        "events_per_s": round(rate),
        "steady_events_per_s": round(steady) if steady else None,
        "projected_epoch_h": round(full_pairs / rate / 3600, 2),
        "projected_epoch_h_steady": round(full_pairs / steady / 3600, 2) if steady else None,
        "fit_s": round(t_fit - t_cli, 2),
        "test": {**probe.test, "fraction": round(probe.test["events"] / test_pairs, 4),
                 "events_per_s": round(probe.test["events"] / probe.test["seconds"])},
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "total_s": round(t_end - T_START, 2),
        "peak_rss_MiB": round(usage.ru_maxrss / 1024),
        "config": str(cfg_path),
    }
    text = json.dumps(result, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text, flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
