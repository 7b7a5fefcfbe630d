#!/usr/bin/env bash
# End-to-end demo on the bundled synthetic data: generate -> prepare -> baselines -> GRU4Rec fit -> test.
set -euo pipefail
PY=${1:-python}
cd "$(dirname "$0")/.."
export WANDB_MODE=${WANDB_MODE:-offline}
$PY -m sessrec generate --out data/synthetic/raw --overwrite
$PY -m sessrec prepare data/synthetic/raw/events.tsv --format gru4rec --out data/synthetic/prepared --overwrite
for b in pop iknn; do
  echo "== baseline: $b"
  $PY -m sessrec test --config configs/baselines/$b.yaml
done
echo "== GRU4Rec: fit"
$PY -m sessrec fit --config configs/gru4rec/synthetic.yaml
echo "== GRU4Rec: test"
$PY -m sessrec test --config configs/gru4rec/synthetic.yaml --ckpt_path runs/gru4rec-synthetic/checkpoints/last.ckpt
