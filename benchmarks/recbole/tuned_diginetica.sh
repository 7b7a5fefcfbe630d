#!/usr/bin/env bash
# The TUNED Diginetica-sample leaderboard (docs/leaderboard.md "Tuned"): now a wrapper of
# tuned_leaderboard.sh diginetica (which also runs the p-RNN family), plus the supplementary row.
# Budget: 20 trials per model (Optuna TPE, seed 42), train -> valid MRR@20; the test split is read only by
# the final runs (train_full, 3 seeds per best config).
# Usage: bash benchmarks/recbole/tuned_diginetica.sh [tune|final|supplementary|equal-time|3seeds|table|all]   (default all)
# supplementary: sessrec GRU4Rec with 100 trials (5x the budget), its own row, labelled as such.
# equal-time: sessrec p-RNN alternating and simultaneous, fresh studies of 200 trials or 1000 s (about one
# RecBole 20-trial study's wall clock), best configs on train_full x 3 seeds: supplementary rows, labelled as such.
# 3seeds: sessrec GRU4Rec and p-RNN alternating, fresh 20-trial studies whose trials train with seeds 0, 1, 2
# and score the mean (tune's `seeds`), best configs on train_full x 3 seeds: supplementary rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
export OMP_NUM_THREADS=1
stage="${1:-all}"

source benchmarks/recbole/lib.sh
RESULTS=benchmarks/recbole/results

for step in tune final supplementary equal-time 3seeds table; do
    [[ $stage == "$step" || $stage == all ]] || continue
    if [[ $step == supplementary ]]; then
        studies configs/tune/diginetica-gru4rec-100.yaml
        final_runs benchmarks/recbole/sessrec_diginetica_tuned100.yaml runs/leaderboard-diginetica-sample-tuned100 \
            $RESULTS/sessrec-diginetica-sample-tuned100
    elif [[ $step == equal-time ]]; then
        studies configs/tune/diginetica-prnn-{alternating,simultaneous}-equal-time.yaml
        final_runs benchmarks/recbole/sessrec_diginetica_prnn_equal_time.yaml \
            runs/leaderboard-diginetica-sample-prnn-equal-time $RESULTS/sessrec-diginetica-sample-prnn-equal-time
    elif [[ $step == 3seeds ]]; then
        studies configs/tune/diginetica-{gru4rec,prnn-alternating}-3seeds.yaml
        final_runs benchmarks/recbole/sessrec_diginetica_3seeds.yaml runs/leaderboard-diginetica-sample-3seeds \
            $RESULTS/sessrec-diginetica-sample-3seeds
    else
        bash benchmarks/recbole/tuned_leaderboard.sh diginetica "$step"
    fi
done
