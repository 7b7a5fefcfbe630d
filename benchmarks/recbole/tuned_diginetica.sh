#!/usr/bin/env bash
# The TUNED Diginetica-sample leaderboard (docs/leaderboard.md "Tuned"): now a wrapper of
# tuned_leaderboard.sh diginetica (which also runs the p-RNN family), plus the supplementary row.
# Budget: 20 trials per model (Optuna TPE, seed 42), train -> valid MRR@20; the test split is read only by
# the final runs (train_full, 3 seeds per best config).
# Usage: bash benchmarks/recbole/tuned_diginetica.sh [tune|final|supplementary|equal-time|table|all]   (default all)
# supplementary: sessrec GRU4Rec with 100 trials (5x the budget), its own row, labelled as such.
# equal-time: sessrec p-RNN alternating and simultaneous, fresh studies of 200 trials or 1000 s (about one
# RecBole 20-trial study's wall clock), best configs on train_full x 3 seeds: supplementary rows, labelled as such.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
export OMP_NUM_THREADS=1
stage="${1:-all}"

for step in tune final supplementary equal-time table; do
    [[ $stage == "$step" || $stage == all ]] || continue
    if [[ $step == supplementary ]]; then
        "$SESSREC_PY" -m sessrec tune --config configs/tune/diginetica-gru4rec-100.yaml
        cp runs/tune-diginetica-gru4rec-100/best.yaml benchmarks/recbole/tuned/diginetica-gru4rec-100-best.yaml
        "$SESSREC_PY" -m sessrec experiment --config benchmarks/recbole/sessrec_diginetica_tuned100.yaml
        for run in runs/leaderboard-diginetica-sample-tuned100/*/; do
            [[ -f $run/result.json ]] || continue
            dest="benchmarks/recbole/results/sessrec-diginetica-sample-tuned100/$(basename "$run")"
            mkdir -p "$dest" && cp "$run/result.json" "$run/run.yaml" "$dest/"
        done
    elif [[ $step == equal-time ]]; then
        for tune_file in configs/tune/diginetica-prnn-alternating-equal-time.yaml \
                         configs/tune/diginetica-prnn-simultaneous-equal-time.yaml; do   # a finished study is not rerun
            m=$(basename "$tune_file" -equal-time.yaml); m=${m#diginetica-prnn-}
            "$SESSREC_PY" -m sessrec tune --config "$tune_file"
            cp "runs/tune-diginetica-prnn-$m-equal-time/best.yaml" "benchmarks/recbole/tuned/diginetica-prnn-$m-equal-time-best.yaml"
        done
        "$SESSREC_PY" -m sessrec experiment --config benchmarks/recbole/sessrec_diginetica_prnn_equal_time.yaml
        for run in runs/leaderboard-diginetica-sample-prnn-equal-time/*/; do
            [[ -f $run/result.json ]] || continue
            dest="benchmarks/recbole/results/sessrec-diginetica-sample-prnn-equal-time/$(basename "$run")"
            mkdir -p "$dest" && cp "$run/result.json" "$run/run.yaml" "$dest/"
        done
    else
        bash benchmarks/recbole/tuned_leaderboard.sh diginetica "$step"
    fi
done
