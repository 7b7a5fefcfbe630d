#!/usr/bin/env bash
# The RecBole rows of docs/leaderboard.md on the Diginetica SAMPLE (1 seed, untuned), full histories.
# Data (sessrec venv): the relaxed preparation of configs/gru4rec/diginetica-sample.yaml + categories:
#   python -m sessrec prepare ../shared/data/diginetica/sample_train-item-views.csv --format diginetica \
#       --min-item-support 2 --test-days 7 --valid-days 7 --out data/diginetica-sample/prepared
#   python -m sessrec extract diginetica-categories ../shared/data/diginetica/product-categories.csv \
#       --out data/diginetica-sample/features/properties.parquet
# Usage: bash benchmarks/recbole/run_diginetica.sh [SEEDS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RECBOLE_PY="${RECBOLE_PY:-.venv-recbole/bin/python}"
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
EXPORT="data/recbole/digi-s2"
OUT="${OUT:-benchmarks/recbole/results/diginetica-sample}"
export OMP_NUM_THREADS=1
"$SESSREC_PY" benchmarks/recbole/export.py data/diginetica-sample/prepared "$EXPORT" \
    --properties data/diginetica-sample/features/properties.parquet --feature-columns category
for seed in "${@:-0}"; do
    for model in GRU4Rec GRU4RecF SASRec; do
        "$RECBOLE_PY" benchmarks/recbole/run.py "$EXPORT" --model "$model" --seed "$seed" \
            --config benchmarks/recbole/default.yaml --set epochs=20 --set stopping_step=3 \
            --label "Diginetica sample (support 2)" --out "$OUT" --work-dir "data/recbole/work"
    done
done
