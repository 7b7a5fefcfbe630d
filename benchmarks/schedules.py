"""Issue-5 acceptance table: a 2-subnet p-RNN (id 100 + image or text 100) trained simultaneous, residual,
alternating and interleaved, against ID-only 100 and 200, plus a few cheap variants.

    OMP_NUM_THREADS=1 python benchmarks/schedules.py --data /tmp/sch/prepared --feature image \
        --epochs 4 --out schedules.json [--runs id100 id200 sim res alt int] [--variants]

Every run is generated from configs/prnn/residual.yaml (2-subnet p-RNN, concat fusion, lr 0.05,
dropout_hidden 0.2, cross-entropy, n_sample 2048, batch 64, seed 42) with the schedule / net / model
settings of RUNS below (learning rate: 0.1 x 100 / the width of the output layer's input, i.e. 0.1 for
ID only 100, 0.05 for ID only 200 and for every 100+100 p-RNN; see docs/benchmarks.md, issue 4),
written to `--workdir` and fitted and tested with `benchmarks/prnn_experiments.py` (`fit` through
`python -m sessrec fit`, then test metrics: conservative ties, all items, head = the most popular items
covering `--head-share` of the training events, tail = the other targets). Feature paths stay relative
to `--data` (../raw/image.npy, ...).
Every run trains `--epochs` epochs; residual splits them evenly between the subnets (2+2 for 4), except
res31 (3+1: meant for --epochs 4).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prnn_experiments import evaluate, fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "prnn" / "residual.yaml"
FEATURES = {
    "image": {"class_path": "DenseEncoder", "init_args": {"path": "../raw/image.npy", "normalize": True}},
    "text": {"class_path": "SparseTextEncoder", "init_args": {"path": "../raw/text.npz", "dim": 100}},
}
ID = {"class_path": "ItemIdEncoder", "init_args": {"dim": 100}}

# name -> (label, subnets, schedule init_args or None, net overrides, model overrides); "F" = the feature.
RUNS: dict[str, tuple] = {
    "id100": ("ID only, 100", ["id"], None, {}, {"lr": 0.1}),
    "id200": ("ID only, 200 (embedding 100)", ["id"], None, {"layers": [200]}, {"lr": 0.05}),
    "sim": ("p-RNN simultaneous (naive)", ["id", "F"], {"mode": "simultaneous"}, {}, {}),
    "res": ("p-RNN residual (id then F)", ["id", "F"], {"mode": "residual", "epochs_per_phase": "half"},
            {}, {}),
    "alt": ("p-RNN alternating (per epoch)", ["id", "F"], {"mode": "alternating", "epochs_per_phase": 1},
            {}, {}),
    "int": ("p-RNN interleaved (per mini-batch)", ["id", "F"], {"mode": "interleaved"}, {}, {}),
    # cheap variants (--variants)
    "res_Fid": ("residual, F then id", ["id", "F"],
                {"mode": "residual", "epochs_per_phase": "half", "order": ["F", "id"]}, {}, {}),
    "res31": ("residual, id 3 epochs then F 1", ["id", "F"], {"mode": "residual", "epochs_per_phase": [3, 1]},
              {}, {}),
    "res_withlast": ("residual, train_shared with_last", ["id", "F"],
                     {"mode": "residual", "epochs_per_phase": "half", "train_shared": "with_last"}, {}, {}),
    "sim_weighted": ("simultaneous, weighted fusion", ["id", "F"], {"mode": "simultaneous"},
                     {"fusion": "weighted"}, {}),
    "res_weighted": ("residual, weighted fusion", ["id", "F"],
                     {"mode": "residual", "epochs_per_phase": "half"}, {"fusion": "weighted"}, {}),
    "sim_scaleF05": ("simultaneous, F scale 0.5", ["id", "F"], {"mode": "simultaneous"},
                     {"subnet_scale": {"F": 0.5}}, {}),
    "sim_learnscale": ("simultaneous, learned scales", ["id", "F"], {"mode": "simultaneous"},
                       {"learn_scale": True}, {}),
    "sim_lr01": ("simultaneous, lr 0.1", ["id", "F"], {"mode": "simultaneous"}, {}, {"lr": 0.1}),
    "res_lr01": ("residual, lr 0.1", ["id", "F"], {"mode": "residual", "epochs_per_phase": "half"}, {},
                 {"lr": 0.1}),
    "id200_lr01": ("ID only, 200, lr 0.1", ["id"], None, {"layers": [200]}, {"lr": 0.1}),
    "int_weighted": ("interleaved, weighted fusion", ["id", "F"], {"mode": "interleaved"},
                     {"fusion": "weighted"}, {}),
}
MAIN = ["id100", "id200", "sim", "res", "alt", "int"]


def make_config(name: str, feature: str, epochs: int, data: str, workdir: Path, seed: int = 42) -> Path:
    _, subnets, schedule, net_over, model_over = RUNS[name]
    cfg = yaml.safe_load(BASE.read_text())
    root = workdir / name
    cfg["seed_everything"] = seed
    cfg["trainer"]["max_epochs"] = epochs
    cfg["trainer"]["default_root_dir"] = str(root)
    callbacks = cfg["trainer"]["callbacks"]
    callbacks[0]["init_args"]["dirpath"] = str(root / "checkpoints")
    del callbacks[1:]
    subnets = [feature if s == "F" else s for s in subnets]
    if schedule is not None:
        args = {k: ([feature if s == "F" else s for s in v] if k == "order" else v)
                for k, v in schedule.items()}
        args.setdefault("order", subnets)
        if args.get("epochs_per_phase") == "half":
            args["epochs_per_phase"] = max(1, epochs // len(subnets))
        callbacks.append({"class_path": "sessrec.training.schedules.TrainingSchedule", "init_args": args})
    net = cfg["model"]["init_args"]["net"]["init_args"]
    net["encoders"] = {s: copy.deepcopy(ID if s == "id" else FEATURES[s]) for s in subnets}
    for key, value in net_over.items():
        if key == "encoders":
            for s, a in value.items():
                net["encoders"][s]["init_args"].update(a)
        elif key == "subnet_scale":
            net[key] = {(feature if s == "F" else s): v for s, v in value.items()}
        else:
            net[key] = value
    cfg["model"]["init_args"].update(model_over)
    cfg["data"]["data_dir"] = data
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared folder (features under ../raw)")
    parser.add_argument("--feature", choices=sorted(FEATURES), default="image")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42, help="seed_everything (keys get @seed unless 42)")
    parser.add_argument("--runs", nargs="*", default=None, help=f"default: {' '.join(MAIN)}")
    parser.add_argument("--variants", action="store_true", help="also run every variant after the main table")
    parser.add_argument("--head-share", type=float, default=0.8)
    parser.add_argument("--tail-threshold", type=int, default=None, help="tail = fewer training events")
    parser.add_argument("--workdir", default="runs/schedules")
    parser.add_argument("--out", default="schedules.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = args.runs or (MAIN + ([n for n in RUNS if n not in MAIN] if args.variants else []))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in names:
        data = str(Path(args.data).resolve())
        config = str(make_config(name, args.feature, args.epochs, data, workdir, args.seed))
        seconds = fit(config, [])
        key = (name if name.startswith("id") else f"{name}[{args.feature}]") + (
            "" if args.seed == 42 else f"@{args.seed}")
        results[key] = {"label": RUNS[name][0], "feature": args.feature, "epochs": args.epochs,
                        "seed": args.seed, "fit_s": round(seconds, 1),
                        **evaluate(config, [], args.head_share, args.tail_threshold)}
        r = results[key]
        print(f"{key:24s} MRR@20 {r['all_mrr@20']:.4f}  Recall@20 {r['all_recall@20']:.4f}  "
              f"({r['fit_s']} s)", flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| run | MRR@20 | Recall@20 | head MRR/Recall | tail MRR/Recall |\n|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {r['label']} ({key}) | {r['all_mrr@20']:.4f} | {r['all_recall@20']:.4f} | "
              f"{r['head_mrr@20']:.4f} / {r['head_recall@20']:.4f} | "
              f"{r['tail_mrr@20']:.4f} / {r['tail_recall@20']:.4f} |")


if __name__ == "__main__":
    main()
