#!/usr/bin/env bash
# End-to-end demo on the bundled synthetic data: generate -> prepare -> baselines -> GRU4Rec fit -> test,
# then item-kNN, the ID-only p-RNN and the p-RNN (id + image + text + properties subnets) side by side:
# `sessrec experiment` fits and tests each and prints a Recall@20 / MRR@20 table (runs/demo/results.md).
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
echo "== p-RNN vs ID only vs item-kNN: fit and test (sessrec experiment)"
mkdir -p runs
cat > runs/demo.yaml <<'YAML'
# Written by scripts/demo.sh: the p-RNN next to its ID-only version and item-kNN. The p-RNN is the
# recommended untuned one (docs/benchmarks.md "p-RNN defaults"): configs/prnn/alternating.yaml, its 4
# subnets trained in turn, two cycles (8 epochs); ID only trains 3 epochs (the data layer's setting).
# A run names one config file, so `base` holds the settings of configs/trainer/default.yaml and
# configs/data/synthetic.yaml: id-only is configs/model/prnn.yaml on them; configs/prnn/alternating.yaml is
# the whole stack ... + configs/model/prnn.yaml + configs/inputs/synthetic/prnn.yaml +
# configs/schedule/alternating.yaml as one file.
name: demo
out_dir: runs/demo
reference: id-only
base:
  seed_everything: 42
  trainer.accelerator: auto
  trainer.devices: 1
  trainer.limit_val_batches: 0
  trainer.enable_progress_bar: false
  data.data_dir: data/synthetic/prepared
  data.batch_size: 64
  data.train_split: train_full
  data.test_split: test
runs:
  - {name: iknn, label: item-kNN, config: configs/baselines/iknn.yaml}
  - {name: id-only, label: ID only (p-RNN with one id subnet), config: configs/model/prnn.yaml, set: {trainer.max_epochs: 3}}
  - {name: prnn, label: "p-RNN id + image + text + properties, alternating", config: configs/prnn/alternating.yaml}
YAML
$PY -m sessrec experiment --config runs/demo.yaml --force
