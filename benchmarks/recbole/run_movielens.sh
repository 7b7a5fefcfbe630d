#!/usr/bin/env bash
# The RecBole rows of docs/leaderboard.md on MovieLens latest-small (1 seed, untuned), one process at a time.
# Needs: data/movielens/prepared and data/movielens/features (make paper PAPER=movielens builds them),
# the RecBole venv (bash benchmarks/recbole/setup_venv.sh). Usage: bash benchmarks/recbole/run_movielens.sh [SEEDS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RECBOLE_PY="${RECBOLE_PY:-.venv-recbole/bin/python}"
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
MAX_HISTORY="${MAX_HISTORY:-50}"
EXPORT="data/recbole/ml-h$MAX_HISTORY"
OUT="${OUT:-benchmarks/recbole/results/movielens}"
export OMP_NUM_THREADS=1
"$SESSREC_PY" benchmarks/recbole/export.py data/movielens/prepared "$EXPORT" --max-history "$MAX_HISTORY" \
    --properties data/movielens/features/properties.parquet --feature-columns genre
for seed in "${@:-0}"; do
    for model in GRU4Rec GRU4RecF SASRec; do
        "$RECBOLE_PY" benchmarks/recbole/run.py "$EXPORT" --model "$model" --seed "$seed" \
            --config benchmarks/recbole/default.yaml --label "MovieLens latest-small" \
            --tag "hist$MAX_HISTORY" --out "$OUT" --work-dir "data/recbole/work"
    done
done
