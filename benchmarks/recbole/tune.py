"""Tune a RecBole model on an export with Optuna, one subprocess of run.py per trial (sessrec venv).

RecBole stays in its own venv: this driver (sessrec's venv, which has Optuna) only builds
``run.py --no-test --set key=value ...`` command lines, runs them one at a time and reads the result
JSON. Trials train on ``train`` and early-stop on valid MRR@20 (RecBole's own figure); the objective is
the best valid MRR@20 and its epoch is kept. ``--no-test`` hands RecBole the valid file as its test
split, so the test split is never loaded while tuning.

    .venv/bin/python benchmarks/recbole/tune.py data/recbole/digi-s2 --model SASRec --trials 20 \\
        --out runs/tune-recbole/digi-s2

Writes ``OUT/<model>/study.db`` (resumable: a rerun counts the finished trials; several processes may
share it, each stops once the study has ``--trials`` finished trials), ``trials/<n>.json``
(run.py's JSON), ``trials.csv`` and ``best.json`` (the best trial's values, its best epoch, and the
``--set`` arguments for the final runs: ``epochs`` = that best epoch, no early stopping).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# The search spaces (documented in docs/leaderboard.md "Tuned"). Shared by all models: learning rate,
# batch size; every trial trains at most MAX_EPOCHS epochs with early stopping (patience PATIENCE) on
# valid MRR@20.
MAX_EPOCHS = 30
PATIENCE = 3


def space(trial: optuna.Trial, model: str) -> dict:
    p: dict = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "train_batch_size": trial.suggest_categorical("train_batch_size", [32, 64, 128, 256]),
    }
    if model in ("GRU4Rec", "GRU4RecF"):
        p["embedding_size"] = trial.suggest_categorical("embedding_size", [32, 64, 128, 256])
        p["hidden_size"] = trial.suggest_categorical("hidden_size", [64, 128, 256, 512])
        p["num_layers"] = trial.suggest_int("num_layers", 1, 2)
        p["dropout_prob"] = trial.suggest_float("dropout_prob", 0.0, 0.6, step=0.1)
    elif model == "SASRec":
        p["hidden_size"] = trial.suggest_categorical("hidden_size", [32, 64, 128])
        p["inner_size"] = p["hidden_size"] * trial.suggest_categorical("inner_factor", [1, 2, 4])
        p["n_layers"] = trial.suggest_int("n_layers", 1, 3)
        p["n_heads"] = trial.suggest_categorical("n_heads", [1, 2, 4])
        p["hidden_dropout_prob"] = trial.suggest_float("hidden_dropout_prob", 0.0, 0.6, step=0.1)
        p["attn_dropout_prob"] = trial.suggest_float("attn_dropout_prob", 0.0, 0.6, step=0.1)
    else:
        raise SystemExit(f"no search space for {model}")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="export folder (benchmarks/recbole/export.py)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--trials", type=int, default=20, help="finished trials in the study (a rerun resumes)")
    ap.add_argument("--seed", type=int, default=42,
                    help="TPE's seed (a new study's; a joining process draws its own)")
    ap.add_argument("--train-seed", type=int, default=0, help="RecBole's seed in every trial")
    ap.add_argument("--config", default=str(HERE / "default.yaml"))
    ap.add_argument("--out", default="runs/tune-recbole")
    ap.add_argument("--python", default=os.environ.get("RECBOLE_PY", str(ROOT / ".venv-recbole/bin/python")))
    ap.add_argument("--timeout", type=int, default=900, help="seconds per trial before it is failed")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    name = Path(args.data).name
    out = Path(args.out) / args.model
    (out / "trials").mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    with open(out / "study.lock", "w") as lock:  # one process creates the study, the others join it
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            study = optuna.load_study(study_name=f"{name}-{args.model}", storage=storage)
            joined = True
        except KeyError:
            study = optuna.create_study(study_name=f"{name}-{args.model}", storage=storage,
                                        direction="maximize")
            joined = False
    # the seed makes a new study's search reproducible; a process that joins an existing one (a rerun, or a
    # second worker) draws its own random values instead of replaying the first process's
    study.sampler = optuna.samplers.TPESampler(seed=None if joined else args.seed)
    done = sum(t.state.is_finished() for t in study.trials)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def objective(trial: optuna.Trial) -> float:
        params = space(trial, args.model)
        sets = [f"{k}={v}" for k, v in params.items()]
        sets += [f"epochs={MAX_EPOCHS}", f"stopping_step={PATIENCE}"]
        tdir = out / "trials"
        cmd = [
            args.python, str(HERE / "run.py"), args.data, "--model", args.model,
            "--seed", str(args.train_seed),
            "--config", args.config, "--no-test", "--tag", f"trial{trial.number}", "--out", str(tdir),
            "--work-dir", str(out / "work"),
        ]
        for s in sets:
            cmd += ["--set", s]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        secs = time.perf_counter() - start
        if proc.returncode != 0:
            (tdir / f"{trial.number}.err").write_text(proc.stdout[-5000:] + proc.stderr[-20000:])
            last = proc.stderr.strip().splitlines()[-1:]
            raise RuntimeError(f"run.py failed (rc {proc.returncode}): {last}")
        result = tdir / f"{name}-{args.model}-trial{trial.number}-seed{args.train_seed}.json"
        rec = json.loads(result.read_text())
        extra = rec["extra"]
        trial.set_user_attr("best_epoch", extra["best_epoch"])
        trial.set_user_attr("epochs_trained", extra["epochs_trained"])
        trial.set_user_attr("seconds", round(secs, 1))
        trial.set_user_attr("valid_curve", extra["valid_mrr@20_per_epoch"])
        trial.set_user_attr("sets", sets)
        value = float(extra["best_valid_mrr@20"])
        print(
            f"trial {trial.number} valid MRR@20 {value:.4f} "
            f"(epoch {extra['best_epoch']}/{extra['epochs_trained']}) "
            f"in {secs:.0f} s: {params}",
            flush=True,
        )
        return value

    remaining = args.trials - done
    if remaining > 0:
        state = optuna.trial.TrialState
        finished = (state.COMPLETE, state.PRUNED, state.FAIL)
        study.optimize(objective, n_trials=remaining, catch=(RuntimeError, subprocess.TimeoutExpired),
                       callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=finished)])
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise SystemExit(f"{args.model}: no trial of {out / 'study.db'} completed "
                         f"(errors: {out / 'trials'}/*.err)")
    best = study.best_trial
    params = {k: v for k, v in best.params.items() if k != "inner_factor"}
    if "inner_factor" in best.params:
        params["inner_size"] = best.params["hidden_size"] * best.params["inner_factor"]
    epochs = int(best.user_attrs["best_epoch"])
    summary = {
        "model": args.model,
        "data": args.data,
        "trials": len(study.trials),
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "best_trial": best.number,
        "best_valid_mrr@20": best.value,
        "best_epoch": epochs,
        "params": params,
        "tuning_seconds": sum(t.user_attrs.get("seconds", 0) for t in study.trials),
        # the final runs: train_full, exactly the tuned epoch count, the last epoch's weights
        "final_sets": [f"{k}={v}" for k, v in params.items()]
        + [f"epochs={epochs}", f"stopping_step={epochs + 1}"],
    }
    (out / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
