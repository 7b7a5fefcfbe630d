"""Train and evaluate a RecBole sequential model on files from benchmarks/recbole/export.py.

Runs in the RecBole venv (benchmarks/recbole/setup_venv.sh), never in sessrec's:

    OMP_NUM_THREADS=1 .venv-recbole/bin/python benchmarks/recbole/run.py data/recbole/movielens \
        --model GRU4Rec --seed 0 --config benchmarks/recbole/default.yaml --out results/recbole

What it does:

* imports RecBole, then switches torch anomaly detection OFF (RecBole's sine.py switches it on for
  every model at import: 3.6-3.9x slower) and uses 1 torch thread (``--threads``);
* trains on ``NAME.<train split>.inter`` (``--train-split train``, default; ``train_full`` puts the
  validation period into training), early-stops on valid MRR@20, tests the best epoch's weights on
  ``NAME.test.inter``: full ranking over every item of the exported catalogue (= sessrec's item index),
  Recall@10/20 and MRR@10/20;
* re-ranks the test rows itself from ``model.full_sort_predict`` with sessrec's rank definitions
  (conservative = #(others >= target) + 1, standard = #(others > target) + 1) and counts ties, so the
  result carries both RecBole's own figures and sessrec-comparable ones;
* writes ``OUT/<dataset>-<model>[-<tag>]-seed<seed>.json`` in the leaderboard schema
  (benchmarks/recbole/leaderboard.py).

Hyperparameters: RecBole's model defaults, then ``--config`` YAML files (a plain RecBole config dict;
an optional ``models: {GRU4Rec: {...}}`` section applies to one model), then ``--set key=value``
(value parsed as YAML). MAX_ITEM_LIST_LENGTH is set to the longest exported history unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

SCHEMA = "sessrec-leaderboard/1"
CUTOFFS = (10, 20)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="folder written by export.py (its basename is the dataset name)")
    parser.add_argument("--model", required=True, help="RecBole model: GRU4Rec, GRU4RecF, SASRec, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), merged in order")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one RecBole setting (value parsed as YAML), e.g. --set epochs=20",
    )
    parser.add_argument("--train-split", default="train", choices=["train", "train_full"])
    parser.add_argument(
        "--label", default=None, help="dataset label in the leaderboard (default: dataset name)"
    )
    parser.add_argument("--tag", default=None, help="variant tag for the result name and leaderboard row")
    parser.add_argument("--out", default="results/recbole", help="folder for the result JSON")
    parser.add_argument(
        "--work-dir", default=None, help="RecBole's log/ and checkpoints (default: a temp dir)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-test",
        action="store_true",
        help="tuning mode: the test split is never loaded (RecBole's test loader gets the valid file), "
        "nothing is tested; the JSON holds the valid figures and the per-epoch valid curve",
    )
    parser.add_argument(
        "--test-weights",
        default="best",
        choices=["best", "last"],
        help="best: the best valid epoch's weights (early stopping); last: the last epoch's, for a final "
        "run on train_full with a fixed (tuned) epoch count, where valid is inside the training data",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, meta: dict) -> dict:
    """The RecBole config dict: protocol settings (fixed) + user hyperparameters."""
    data_dir = Path(args.data).resolve()
    user: dict = {}
    for path in args.config:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        per_model = loaded.pop("models", {}) or {}
        user.update(loaded)
        user.update(per_model.get(args.model, {}) or {})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        user[key.strip()] = yaml.safe_load(value)
    features = meta.get("item_features", [])
    if args.model.endswith("F") and "selected_features" not in user:
        if not features:
            raise SystemExit(f"{args.model} needs item features: export with --feature-columns")
        user["selected_features"] = features
    protocol = {
        "data_path": str(data_dir.parent),
        "benchmark_filename": [args.train_split, "valid", "valid" if args.no_test else "test"],
        "USER_ID_FIELD": "session_id",
        "ITEM_ID_FIELD": "item_id",
        # without this alias RecBole remaps item_id_list with its OWN token table: histories would
        # silently point at other items (check_rows catches it)
        "alias_of_item_id": ["item_id_list"],
        "TIME_FIELD": None,
        "load_col": {
            "inter": ["session_id", "item_id_list", "item_id"],
            "item": ["item_id", *user.get("selected_features", [])],
        },
        "eval_args": {"split": None, "order": "TO", "group_by": None, "mode": "full"},
        "metrics": ["Recall", "MRR"],
        "topk": list(CUTOFFS),
        "valid_metric": "MRR@20",
        "valid_metric_bigger": True,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "show_progress": False,
        "worker": 0,
        "metric_decimal_place": 6,
        "train_neg_sample_args": None,  # CE loss over the full catalogue
    }
    defaults = {"MAX_ITEM_LIST_LENGTH": max(int(meta["max_history"]), 1), "epochs": 50, "stopping_step": 5}
    clash = sorted(set(user) & (set(protocol) - {"seed", "load_col", "valid_metric"}))
    if clash:
        raise SystemExit(f"these settings are fixed by the protocol, not configurable: {clash}")
    config = {**defaults, **protocol, **user}
    if config["MAX_ITEM_LIST_LENGTH"] < meta["max_history"]:
        raise SystemExit(
            f"MAX_ITEM_LIST_LENGTH {config['MAX_ITEM_LIST_LENGTH']} < longest exported history "
            f"{meta['max_history']}: RecBole would keep the OLDEST items; re-export with "
            "--max-history instead (it keeps the most recent ones)"
        )
    return config


def own_ranks(model, loader, torch) -> dict:
    """Rank every test row's target from full_sort_predict with sessrec's definitions."""
    conservative, standard, ties = [], [], 0
    rows = 0
    model.eval()
    with torch.no_grad():
        for interaction, _history, _pos_u, pos_i in loader:
            scores = model.full_sort_predict(interaction).view(len(pos_i), -1).clone()  # (B, N+1)
            scores[:, 0] = -torch.inf  # RecBole's padding id 0 is not an item
            target = scores.gather(1, pos_i.view(-1, 1))  # (B, 1)
            above = (scores > target).sum(1)  # (B,)
            at_least = (scores >= target).sum(1) - 1  # (B,) the target ties with itself
            finite = torch.isfinite(target[:, 0])
            n_others = scores.shape[1] - 2
            standard.append(torch.where(finite, above + 1, torch.full_like(above, n_others + 1)))
            conservative.append(torch.where(finite, at_least + 1, torch.full_like(above, n_others + 1)))
            ties += int((at_least > above).sum())
            rows += len(pos_i)
    out = {"rows": rows, "rows_with_tied_target": ties}
    for mode, ranks in (("conservative", conservative), ("standard", standard)):
        r = torch.cat(ranks).double()
        out[mode] = {}
        for k in CUTOFFS:
            hit = r <= k
            out[mode][f"recall@{k}"] = float(hit.double().mean())
            out[mode][f"mrr@{k}"] = float((hit.double() / r).mean())
    return out


def check_rows(dataset, split, path: Path, n: int = 200) -> None:
    """The first n rows RecBole loaded equal the export file's (histories mapped back to tokens)."""
    with open(path) as f:
        next(f)
        lines = [next(f, None) for _ in range(n)]
    inter = split.inter_feat
    for i, line in enumerate(x for x in lines if x):
        _, hist, target = line.rstrip("\n").split("\t")
        length = int(inter["item_length"][i])
        ids = inter["item_id_list"][i][:length].tolist()
        got_hist = " ".join(dataset.id2token("item_id", ids).tolist())
        got_target = str(dataset.id2token("item_id", [int(inter["item_id"][i])])[0])
        if got_hist != hist or got_target != target:
            raise SystemExit(f"{path}: row {i} differs in RecBole: {got_hist!r} -> {got_target!r}")


def lower_keys(result: dict) -> dict:
    return {str(k).lower(): float(v) for k, v in dict(result).items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir = Path(args.data).resolve()
    name = data_dir.name
    meta_path = data_dir / f"{name}.export.json"
    if not meta_path.is_file():
        raise SystemExit(f"{meta_path}: not found (run benchmarks/recbole/export.py first)")
    meta = json.loads(meta_path.read_text())
    config_dict = build_config(args, meta)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if not hasattr(np, "float"):  # RecBole 1.2.1's MRR uses np.float, removed in numpy 1.24
        np.float = float  # type: ignore[attr-defined]
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    model_class = get_model(args.model)  # imports every sequential model, sine.py included
    torch.autograd.set_detect_anomaly(False)  # sine.py switched it on at import

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="recbole-run-"))
    work.mkdir(parents=True, exist_ok=True)
    config_dict["checkpoint_dir"] = str(work / "saved")
    cwd = os.getcwd()
    os.chdir(work)  # RecBole's logger writes ./log/
    try:
        argv_saved, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also parses --key=value argv
        try:
            config = Config(model=args.model, dataset=name, config_dict=config_dict)
        finally:
            sys.argv = argv_saved
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        torch.set_num_threads(args.threads)  # init_seed/Config may touch threads
        t_data = time.perf_counter()
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        data_seconds = time.perf_counter() - t_data
        n_items = dataset.item_num - 1  # without [PAD]
        if n_items != meta["n_items"]:
            raise SystemExit(f"RecBole catalogue has {n_items} items, export has {meta['n_items']}")
        test_split = "valid" if args.no_test else "test"
        expect = {
            args.train_split: meta["splits"][args.train_split]["rows"],
            "valid": meta["splits"]["valid"]["rows"],
            "test": meta["splits"][test_split]["rows"],
        }
        got = {
            args.train_split: len(train_data.dataset),
            "valid": len(valid_data.dataset),
            "test": len(test_data.dataset),
        }
        if got != expect:
            raise SystemExit(f"row counts differ from the export: RecBole {got}, export {expect}")

        check_rows(dataset, test_data.dataset, data_dir / f"{name}.{test_split}.inter")
        init_seed(config["seed"], config["reproducibility"])
        model = model_class(config, train_data.dataset).to(config["device"])
        torch.autograd.set_detect_anomaly(False)
        assert not torch.is_anomaly_enabled()
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        epoch_times: list[float] = []
        train_epoch = trainer._train_epoch

        def timed_epoch(*a, **kw):
            start = time.perf_counter()
            out = train_epoch(*a, **kw)
            epoch_times.append(time.perf_counter() - start)
            return out

        trainer._train_epoch = timed_epoch
        best: dict = {}

        def keep_best(epoch, *a, **kw):
            # RecBole pickles its Config into the checkpoint, which torch >= 2.6's weights_only load
            # refuses: keep the best epoch's weights in memory instead of a file.
            best["epoch"] = epoch
            best["state"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

        trainer._save_checkpoint = keep_best
        valid_curve: list[float] = []
        valid_epoch = trainer._valid_epoch

        def logged_valid(*a, **kw):
            score, result = valid_epoch(*a, **kw)
            valid_curve.append(float(score))
            return score, result

        trainer._valid_epoch = logged_valid
        t_fit = time.perf_counter()
        best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        fit_seconds = time.perf_counter() - t_fit
        t_test = time.perf_counter()
        if args.test_weights == "best":
            trainer.model.load_state_dict(best["state"])
        if args.no_test:
            test_result = {}
            own = {"conservative": {}, "standard": {}, "rows_with_tied_target": None, "rows": 0}
        else:
            test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            own = own_ranks(trainer.model, test_data, torch)
            if own["rows"] != meta["splits"]["test"]["rows"]:
                expected = meta["splits"]["test"]["rows"]
                raise SystemExit(f"ranked {own['rows']} test rows, export has {expected}")
        test_seconds = time.perf_counter() - t_test
    finally:
        os.chdir(cwd)

    train_rows = meta["splits"][args.train_split]["rows"]
    train_seconds = float(sum(epoch_times))
    params = {
        k: config[k]
        for k in sorted(set(config_dict) | set(_model_keys(config, args.model)))
        if k not in ("data_path", "checkpoint_dir", "load_col", "benchmark_filename", "device")
    }
    tag = f"-{args.tag}" if args.tag else ""
    record = {
        "schema": SCHEMA,
        "framework": "recbole",
        "model": args.model + (f" ({args.tag})" if args.tag else ""),
        "dataset": args.label or name,
        "seed": args.seed,
        "params": _jsonable(params),
        "tie_mode": "conservative",
        "metrics": {
            "valid": lower_keys(best_valid),
            **({} if args.no_test else {"test": own["conservative"]}),
        },
        "extra": {
            "recbole_test_metrics": lower_keys(test_result),
            "standard_ties_test_metrics": own["standard"],
            "test_rows_with_tied_target": own["rows_with_tied_target"],
            "test_rows": own["rows"],
            "train_rows": train_rows,
            "train_split": args.train_split,
            "n_items": n_items,
            "max_history_cut": meta.get("max_history_cut"),
            "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
            "epochs_trained": len(epoch_times),
            "best_epoch": best["epoch"] + 1,
            "best_valid_mrr@20": float(best_valid_score),
            "valid_mrr@20_per_epoch": valid_curve,
            "test_weights": args.test_weights,
            "tested": not args.no_test,
            "fit_seconds_with_validation": fit_seconds,
            "test_seconds": test_seconds,
            "data_seconds": data_seconds,
            "threads": args.threads,
            "versions": _versions(torch),
            "machine": platform.processor() or platform.machine(),
            "export": str(meta_path),
        },
        "epochs": len(epoch_times),
        "train_seconds": train_seconds,
        "train_events_per_s": train_rows * len(epoch_times) / train_seconds if train_seconds else None,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{name}-{args.model}{tag}-seed{args.seed}.json"
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out_path)
    if args.no_test:
        print(
            f"{args.model} seed {args.seed}: NO TEST; best valid MRR@20 {float(best_valid_score):.4f} "
            f"at epoch "
            f"{best['epoch'] + 1} of {len(epoch_times)} -> {out_path}"
        )
        return
    m = record["metrics"]["test"]
    print(
        f"{args.model} seed {args.seed}: test Recall@20 {m['recall@20']:.4f} MRR@20 {m['mrr@20']:.4f} "
        f"(conservative; RecBole's own {record['extra']['recbole_test_metrics']}), "
        f"{len(epoch_times)} epochs, {record['train_events_per_s']:.0f} train events/s -> {out_path}"
    )


def _model_keys(config, model: str) -> list[str]:
    """Hyperparameter names from RecBole's model property file (e.g. hidden_size, dropout_prob)."""
    import recbole

    path = Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml"
    keys = list((yaml.safe_load(path.read_text()) or {}).keys()) if path.is_file() else []
    return keys + [
        "epochs",
        "train_batch_size",
        "learning_rate",
        "learner",
        "stopping_step",
        "MAX_ITEM_LIST_LENGTH",
        "weight_decay",
        "eval_batch_size",
    ]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _versions(torch) -> dict:
    import recbole

    return {
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    main()
