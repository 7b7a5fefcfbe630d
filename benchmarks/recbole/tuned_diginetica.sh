#!/usr/bin/env bash
# The TUNED Diginetica-sample leaderboard (docs/leaderboard.md "Tuned"), one process at a time, 1 thread.
# Budget: 20 trials per model (Optuna TPE, seed 42), train -> valid MRR@20; the test split is read only by
# the final runs (train_full, 3 seeds per best config).
# Usage: bash benchmarks/recbole/tuned_diginetica.sh [tune|final|supplementary|table|all]   (default all)
# supplementary: sessrec GRU4Rec with 100 trials (5x the budget), its own row, labelled as such.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RECBOLE_PY="${RECBOLE_PY:-.venv-recbole/bin/python}"
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
EXPORT="data/recbole/digi-s2"
TUNE_OUT="runs/tune-recbole/digi-s2"
OUT="benchmarks/recbole/results/diginetica-sample-tuned"
MODELS="${MODELS:-GRU4Rec SASRec GRU4RecF}"
SEEDS="${SEEDS:-0 1 2}"
LABEL="Diginetica sample (support 2)"
export OMP_NUM_THREADS=1
stage="${1:-all}"

if [[ $stage == tune || $stage == all ]]; then
    [[ -f $EXPORT/digi-s2.export.json ]] || "$SESSREC_PY" benchmarks/recbole/export.py \
        data/diginetica-sample/prepared "$EXPORT" \
        --properties data/diginetica-sample/features/properties.parquet --feature-columns category
    "$SESSREC_PY" -m sessrec tune --config configs/tune/diginetica-gru4rec.yaml
    "$SESSREC_PY" -m sessrec tune --config configs/tune/diginetica-iknn.yaml
    cp runs/tune-diginetica-gru4rec/best.yaml benchmarks/recbole/tuned/diginetica-gru4rec-best.yaml
    cp runs/tune-diginetica-iknn/best.yaml benchmarks/recbole/tuned/diginetica-iknn-best.yaml
    for model in $MODELS; do
        "$SESSREC_PY" benchmarks/recbole/tune.py "$EXPORT" --model "$model" --trials 20 --out "$TUNE_OUT"
        cp "$TUNE_OUT/$model/best.json" "benchmarks/recbole/tuned/diginetica-$model-best.json"
    done
fi

if [[ $stage == final || $stage == all ]]; then
    for model in $MODELS; do
        best="benchmarks/recbole/tuned/diginetica-$model-best.json"
        mapfile -t sets < <("$SESSREC_PY" -c "import json, sys
for s in json.load(open(sys.argv[1]))['final_sets']:
    print('--set', s, sep=chr(10))" "$best")
        for seed in $SEEDS; do
            "$RECBOLE_PY" benchmarks/recbole/run.py "$EXPORT" --model "$model" --seed "$seed" \
                --config benchmarks/recbole/default.yaml "${sets[@]}" \
                --train-split train_full --test-weights last \
                --label "$LABEL" --tag tuned --out "$OUT" --work-dir data/recbole/work
        done
    done
    "$SESSREC_PY" -m sessrec experiment --config benchmarks/recbole/sessrec_diginetica_tuned.yaml
    mkdir -p benchmarks/recbole/results/sessrec-diginetica-sample-tuned
    for run in runs/leaderboard-diginetica-sample-tuned/*/; do
        [[ -f $run/result.json ]] || continue
        dest="benchmarks/recbole/results/sessrec-diginetica-sample-tuned/$(basename "$run")"
        mkdir -p "$dest" && cp "$run/result.json" "$run/run.yaml" "$dest/"
    done
fi

if [[ $stage == supplementary || $stage == all ]]; then
    "$SESSREC_PY" -m sessrec tune --config configs/tune/diginetica-gru4rec-100.yaml
    cp runs/tune-diginetica-gru4rec-100/best.yaml benchmarks/recbole/tuned/diginetica-gru4rec-100-best.yaml
    "$SESSREC_PY" -m sessrec experiment --config benchmarks/recbole/sessrec_diginetica_tuned100.yaml
    for run in runs/leaderboard-diginetica-sample-tuned100/*/; do
        [[ -f $run/result.json ]] || continue
        dest="benchmarks/recbole/results/sessrec-diginetica-sample-tuned100/$(basename "$run")"
        mkdir -p "$dest" && cp "$run/result.json" "$run/run.yaml" "$dest/"
    done
fi

if [[ $stage == table || $stage == all ]]; then
    extra=()
    [[ -d benchmarks/recbole/results/sessrec-diginetica-sample-tuned100 ]] \
        && extra+=(benchmarks/recbole/results/sessrec-diginetica-sample-tuned100)
    "$SESSREC_PY" benchmarks/recbole/leaderboard.py \
        benchmarks/recbole/results/diginetica-sample-tuned \
        benchmarks/recbole/results/sessrec-diginetica-sample-tuned "${extra[@]}" \
        --sessrec-dataset "data/diginetica-sample/prepared=$LABEL" \
        --plot benchmarks/recbole/results/diginetica-sample-tuned.png
fi
