"""Training speed of a 2-subnet p-RNN (id 100 + image 100) against ID-only 100, same run, same data.

    OMP_NUM_THREADS=1 python benchmarks/prnn_speed.py --steps 2000 --repeats 3 --out prnn_speed.json

Data: the GRU4Rec speed benchmark's (`benchmarks/gru4rec_speed.py`: 1,000,000 events over 20,000 Zipf
items, cached under `--cache`), train_full, session-parallel batches of 64. Image features: random
L2-normalised `--image-dim` vectors per item (1024 = the p-RNN paper's GoogLeNet features), fed to the
GRU as they are (DenseEncoder, no projection) or through a trainable linear projection to 100 values
(`id+image_proj`, DenseEncoder(projection=100)). Configuration: the GRU4Rec speed config (cross-entropy,
logq 1, n_sample 2048, sample_alpha 0.5, dropout_hidden 0.4, lr 0.2, momentum 0.2, AdagradMomentum with
row-sparse tables), 100 units per subnet, concat fusion. Models:

- `gru4rec`: GRU4Rec, shared embedding, 100 units (the speed benchmark's model);
- `id`: ParallelRNN with one id subnet (ItemIdEncoder 100, 100 units): ID-only in the p-RNN family;
- `id+image`: ParallelRNN with id (100) + image (100) subnets;
- `id+image_proj`: the same with the image vectors projected to 100 values before the GRU.

Each repeat trains every model for `--warmup` + `--steps` session-parallel steps (the plain loop of
`gru4rec_speed.fit_plain`, without the Trainer) in the order of `--models`, so neighbours' load hits all
models alike; events/s = active (input, target) pairs of the timed steps / seconds. Reported:
the median over repeats and the ratio of medians to ID-only (`id`), plus the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gru4rec_speed import CONFIG, prepared_dir  # noqa: E402

from sessrec.data.batching import SessionParallelIterator  # noqa: E402
from sessrec.data.prepared import PreparedData  # noqa: E402
from sessrec.training.sampler import PopularitySampler  # noqa: E402
from sessrec.encoders import Catalogue, DenseEncoder, ItemIdEncoder  # noqa: E402
from sessrec.features import write_dense  # noqa: E402
from sessrec.training.losses import loss_by_name  # noqa: E402
from sessrec.training.sampler import log_q_columns  # noqa: E402
from sessrec.models.gru4rec import GRU4Rec  # noqa: E402
from sessrec.models.prnn import ParallelRNN  # noqa: E402
from sessrec.training.optim import AdagradMomentum  # noqa: E402
from sessrec.training.fused import FusedGRU4RecStep  # noqa: E402
from sessrec.training.fused_prnn import HandwrittenParallelStep  # noqa: E402
from sessrec.training.steps import substep_loss  # noqa: E402

MODELS = ("gru4rec", "id", "id+image", "id+image_proj")


def build(model: str, n_items: int, folder: Path) -> torch.nn.Module:
    c = CONFIG
    if model == "gru4rec":
        return GRU4Rec(n_items, layers=c["layers"], input_mode="shared", dropout_hidden=c["dropout_hidden"])
    encoders = {"id": ItemIdEncoder(100)}
    if model.startswith("id+image"):
        projection = 100 if model.endswith("_proj") else 0
        encoders["image"] = DenseEncoder("image.npy", normalize=True, projection=projection)
    catalogue = Catalogue(np.arange(n_items).astype(str).astype(object), folder)
    return ParallelRNN(n_items, encoders, c["layers"], dropout_hidden=c["dropout_hidden"],
                       catalogue=catalogue)


def train_steps(net: torch.nn.Module, data: PreparedData, steps: int, warmup: int, seed: int,
                step_kind: str = "autograd") -> dict:
    """`warmup` + `steps` training steps of the plain loop; events/s over the timed steps.

    step_kind "autograd": forward, `loss.backward()`, `opt.step()`; "handwritten": the module's fast step
    for the net (GRU4Rec: `FusedGRU4RecStep`, optimiser included; ParallelRNN: `HandwrittenParallelStep`
    then `opt.step()`), autograd for a step with inactive rows (as the module does)."""
    torch.manual_seed(seed)
    c = CONFIG
    split = data.split("train_full")
    counts = torch.as_tensor(data.counts("train_full"), dtype=torch.float64)
    log_pop = counts.clamp_min(1).log().float()
    sampler = PopularitySampler(counts.numpy(), c["sample_alpha"], c["n_sample"], 2_000_000, seed=seed)
    opt = AdagradMomentum(net.parameters(), lr=c["lr"], momentum=c["momentum"])
    loss_fn = loss_by_name(c["loss"], logq=c["logq"])
    fast = None
    if step_kind == "handwritten":
        fast = (FusedGRU4RecStep(net, opt, c["logq"], log_pop, c["sample_alpha"], c["loss"])
                if isinstance(net, GRU4Rec) else
                HandwrittenParallelStep(net, c["loss"], logq=c["logq"], log_pop=log_pop, sample_alpha=c["sample_alpha"]))
    net.train()
    hidden, step, events, start = None, 0, 0, 0.0
    for block in SessionParallelIterator(split.items, split.offsets, c["batch_size"], 32):
        n_steps, batch = block.inputs.shape
        hidden = hidden if hidden is not None else net.init_hidden(batch)
        for t in range(n_steps):
            if step == warmup:
                start, events = time.perf_counter(), 0
            if step == warmup + steps:
                seconds = time.perf_counter() - start
                return {"events_per_s": events / seconds, "ms_per_step": 1000 * seconds / steps}
            hidden = [h * (~block.reset[t]).unsqueeze(1).float() for h in hidden]
            inputs, targets, active = block.inputs[t], block.targets[t], block.active[t]
            samples = sampler.sample()  # (S,)
            if isinstance(fast, FusedGRU4RecStep) and bool(active.all()):
                _, hidden = fast(inputs, targets, samples, hidden)
            elif fast is not None and bool(active.all()):
                opt.zero_grad(set_to_none=True)
                _, hidden = fast(inputs, targets, samples, hidden, into_grad=True)  # as the module on one device
                opt.step()
            else:
                log_q = log_q_columns(log_pop, targets, samples, c["sample_alpha"])  # (B+S,)
                loss, hidden = substep_loss(net, loss_fn, inputs, targets, hidden, active, samples, log_q)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            hidden = [h.detach() for h in hidden]
            step, events = step + 1, events + int(active.sum())
    raise ValueError(f"the training split has fewer than {warmup + steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--image-dim", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps-kind", nargs="+", choices=["autograd", "handwritten"], default=["autograd"],
                        help="how each model trains; several: each model once per kind, in turn")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "sessrec-bench"))
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data_dir = prepared_dir(args.events, args.items, Path(args.cache))
    data = PreparedData.load(data_dir)
    names = [m if len(args.steps_kind) == 1 else f"{m}/{kind}" for m in args.models for kind in args.steps_kind]
    runs: dict[str, list[dict]] = {m: [] for m in names}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        image = rng.standard_normal((data.n_items, args.image_dim)).astype(np.float32)  # (N, D)
        write_dense(Path(tmp) / "image.npy", image, np.arange(data.n_items).astype(str))
        for repeat in range(args.repeats):
            for model in args.models:
                for kind in args.steps_kind:
                    name = model if len(args.steps_kind) == 1 else f"{model}/{kind}"
                    net = build(model, data.n_items, Path(tmp))
                    runs[name].append(train_steps(net, data, args.steps, args.warmup, seed=repeat, step_kind=kind))
                    speed = runs[name][-1]["events_per_s"]
                    print(f"repeat {repeat} {name:24s} {speed:8.0f} events/s", flush=True)
    med = {m: statistics.median(r["events_per_s"] for r in runs[m]) for m in names}
    result = {"args": vars(args), "median_events_per_s": med, "runs": runs}
    for kind in args.steps_kind:
        suffix = "" if len(args.steps_kind) == 1 else f"/{kind}"
        for base in (f"id{suffix}", f"id/{args.steps_kind[0]}" if suffix else "id"):
            if base not in runs:
                continue
            for model in (m for m in names if m.startswith("id+") and m.endswith(suffix)):
                result[f"ratio_{model}_vs_{base}"] = med[model] / med[base]
                result[f"ratio_{model}_vs_{base}_per_repeat"] = [
                    p["events_per_s"] / i["events_per_s"] for p, i in zip(runs[model], runs[base])]
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
