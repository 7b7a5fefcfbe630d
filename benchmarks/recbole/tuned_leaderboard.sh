#!/usr/bin/env bash
# The TUNED leaderboards (docs/leaderboard.md "Tuned"), one process at a time, 1 thread.
# Budget: 20 trials per model (Optuna TPE, seed 42), train -> valid MRR@20; the test split is read only by
# the final runs (train_full, seeds 0 1 2 per best config, tested once).
#
# Usage: bash benchmarks/recbole/tuned_leaderboard.sh DATASET [prepare|tune|final|table|all]   (default all)
#   DATASET: diginetica  Diginetica sample (support 2): sessrec GRU4Rec, item-kNN, the p-RNN family
#                        (ID only, feature only, concat, p-RNN x 4 schedules; category subnet);
#                        RecBole GRU4Rec, GRU4RecF (+ category), SASRec
#            rees46      REES46 sample (17 minutes; test = last 6 min, valid = 6 min before): sessrec
#                        GRU4Rec, item-kNN, the p-RNN family (ID only, feature only, concat, p-RNN x 4
#                        schedules; price/brand/category subnet); RecBole GRU4Rec, GRU4RecF, SASRec
#            movielens   MovieLens latest-small: sessrec GRU4Rec, item-kNN, the p-RNN family (ID only, feature
#                        only, concat, p-RNN x 4 schedules; text + genre/year content subnet); a RecBole trial takes up to
#                        ~55 min on a 2-core CPU, so its 3 x 20-trial search is not run by default (MODELS is
#                        empty); MODELS="GRU4Rec ..." runs it (resumable: a rerun continues each study)
#            hm          H&M sample: prints why no split has test targets (docs/leaderboard.md), runs nothing
#            all         each of the above in turn, the same stage (`all table` rebuilds every table + PNG)
# Stages: prepare (data, properties, RecBole export; skipped when present), tune (sessrec studies, then
# RecBole's), final (RecBole, then sessrec experiment files), table (markdown + PNG from result files only).
# Without the RecBole venv (RECBOLE_PY, default .venv-recbole/bin/python) the RecBole parts are skipped
# with a message. Env: SESSREC_PY (default .venv/bin/python), MODELS (RecBole models), SEEDS (default 0 1 2),
# STUDIES (sessrec studies), RECBOLE_WORK (RecBole work folder, default runs/recbole-work), TRIAL_TIMEOUT
# (seconds before a RecBole trial is failed; default 900, MovieLens 7200: up to 30 epochs at ~40-260 s each).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RECBOLE_PY="${RECBOLE_PY:-.venv-recbole/bin/python}"
SESSREC_PY="${SESSREC_PY:-.venv/bin/python}"
SEEDS="${SEEDS:-0 1 2}"
RECBOLE_WORK="${RECBOLE_WORK:-runs/recbole-work}"
RESULTS=benchmarks/recbole/results
TUNED=benchmarks/recbole/tuned
export OMP_NUM_THREADS=1
source benchmarks/recbole/lib.sh
dataset="${1:?usage: tuned_leaderboard.sh DATASET [prepare|tune|final|table|all] (DATASET: diginetica, rees46, movielens, hm, all)}"
stage="${2:-all}"
case $stage in prepare|tune|final|table|all) ;; *) echo "unknown stage '$stage' (prepare, tune, final, table, all)" >&2; exit 2 ;; esac
if [[ $dataset == all ]]; then
    for one in diginetica rees46 movielens hm; do
        echo "== $one: $stage" >&2
        bash "${BASH_SOURCE[0]}" "$one" "$stage"
    done
    exit 0
fi

case $dataset in
diginetica)
    LABEL="Diginetica sample (support 2)"
    PREPARED=data/diginetica-sample/prepared
    PROPS=data/diginetica-sample/features/properties.parquet
    FEATURE_COLUMNS=(category)
    EXPORT=data/recbole/digi-s2
    PREFIX=diginetica
    RECBOLE_OUT=$RESULTS/diginetica-sample-tuned
    STUDIES="${STUDIES:-gru4rec iknn prnn-id-only prnn-feature-only prnn-concat prnn-simultaneous prnn-residual prnn-alternating prnn-interleaved}"
    # experiment file -> its out_dir and the results folder it is copied to
    EXPERIMENTS=("benchmarks/recbole/sessrec_diginetica_tuned.yaml runs/leaderboard-diginetica-sample-tuned $RESULTS/sessrec-diginetica-sample-tuned"
                 "benchmarks/recbole/sessrec_diginetica_prnn_tuned.yaml runs/leaderboard-diginetica-sample-prnn-tuned $RESULTS/sessrec-diginetica-sample-prnn-tuned")
    # the supplementary rows, when present: 100-trial GRU4Rec; p-RNN alternating / simultaneous at equal wall
    # clock; GRU4Rec and p-RNN alternating tuned with 3 seeds per trial
    TABLE_EXTRA=($RESULTS/sessrec-diginetica-sample-tuned100 $RESULTS/sessrec-diginetica-sample-prnn-equal-time
                 $RESULTS/sessrec-diginetica-sample-3seeds)
    prepare() {
        [[ -f $PREPARED/meta.json ]] || "$SESSREC_PY" -m sessrec prepare \
            ../shared/data/diginetica/sample_train-item-views.csv --format diginetica \
            --min-item-support 2 --test-days 7 --valid-days 7 --out "$PREPARED"
        [[ -f $PROPS ]] || "$SESSREC_PY" -c "from sessrec.extract.movielens import write_diginetica_categories as w; \
w('../shared/data/diginetica/product-categories.csv', '$PROPS')"
    }
    ;;
rees46)
    LABEL="REES46 sample (17 min)"
    PREPARED=data/rees46-sample/prepared
    PROPS=data/rees46-sample/features/properties.parquet
    FEATURE_COLUMNS=(brand category_id price_bucket)
    EXPORT=data/recbole/rees46-s1
    PREFIX=rees46
    RECBOLE_OUT=$RESULTS/rees46-sample-tuned
    STUDIES="${STUDIES:-gru4rec iknn prnn-id-only prnn-alternating prnn-feature-only prnn-concat prnn-simultaneous prnn-residual prnn-interleaved}"
    EXPERIMENTS=("benchmarks/recbole/sessrec_rees46_tuned.yaml runs/leaderboard-rees46-sample-tuned $RESULTS/sessrec-rees46-sample-tuned")
    TABLE_EXTRA=()
    prepare() {
        # sessions = user_session, views only; items need 1 event (with 2, at most 18 test targets remain);
        # test = sessions ending in the last 6 minutes (0.0041667 days), valid = the 6 minutes before
        [[ -f $PREPARED/meta.json ]] || "$SESSREC_PY" -m sessrec prepare \
            ../shared/data/rees46-multicategory-sample/2019-Oct-sample.csv --format rees46 \
            --min-item-support 1 --test-days 0.004166666666666667 --valid-days 0.004166666666666667 --out "$PREPARED"
        if [[ ! -f $PROPS ]]; then
            mkdir -p "$(dirname "$PROPS")"
            # one row per product (first row's category and brand); price = median over the product's events
            "$SESSREC_PY" -c "import pandas as pd, sys
e = pd.read_csv(sys.argv[1])
e.groupby('product_id', sort=True)[['category_id', 'category_code', 'brand']].first().reset_index().to_csv(sys.argv[2], index=False)" \
                ../shared/data/rees46-multicategory-sample/2019-Oct-sample.csv "$(dirname "$PROPS")/items.csv"
            "$SESSREC_PY" -m sessrec extract properties "$(dirname "$PROPS")/items.csv" --id-col product_id \
                --categorical brand category_id category_code \
                --prices ../shared/data/rees46-multicategory-sample/2019-Oct-sample.csv --price-col price --out "$PROPS"
        fi
    }
    ;;
movielens)
    LABEL="MovieLens latest-small"
    PREPARED=data/movielens/prepared
    PROPS=data/movielens/features/properties.parquet
    FEATURE_COLUMNS=(genre)
    EXPORT=data/recbole/ml-h50
    PREFIX=movielens
    RECBOLE_OUT=$RESULTS/movielens-tuned
    STUDIES="${STUDIES:-prnn-id-only prnn-alternating iknn gru4rec prnn-feature-only prnn-concat prnn-simultaneous prnn-interleaved prnn-residual}"
    MODELS="${MODELS-}"   # RecBole side not run (see above); MODELS="GRU4Rec ..." runs it anyway
    TRIAL_TIMEOUT="${TRIAL_TIMEOUT:-7200}"
    EXPERIMENTS=("benchmarks/recbole/sessrec_movielens_tuned.yaml runs/leaderboard-movielens-tuned $RESULTS/sessrec-movielens-tuned")
    TABLE_EXTRA=()
    prepare() {
        [[ -f $PREPARED/meta.json ]] || "$SESSREC_PY" -m sessrec prepare \
            ../shared/data/movielens-latest-small/ml-latest-small/ratings.csv \
            --format movielens --test-days 180 --valid-days 180 --out "$PREPARED"
        [[ -f $PROPS ]] || "$SESSREC_PY" -m sessrec extract movielens \
            ../shared/data/movielens-latest-small/ml-latest-small --out data/movielens/features
    }
    ;;
hm)
    cat <<'EOF'
H&M sample (../shared/data/hm-sample, 5,000 transactions of 4,946 customers over 730 days): no tuned
leaderboard. Sessions = customer + day: 20 sessions with >= 2 purchases (41 events, 21 possible targets in
the whole data set), 18 of them the same article twice, so 3 sessions / 3 targets after dropping
consecutive repeats. Sessions = a customer's whole history: 53 customers with >= 2 purchases, 54 possible
targets in two years. Over 36 `prepare` settings (session gap 1 h or 1e8 s, with and without dropping
repeats, test 90/180/365 days, valid 0/90/180 days, --min-item-support 1) the most test targets any split
keeps is 4 (and at most 4 valid targets); the others fail with an empty test or valid split.
See docs/leaderboard.md "Tuned (REES46 and H&M samples)".
EOF
    exit 0
    ;;
*) echo "unknown DATASET '$dataset' (diginetica, rees46, movielens, hm, all)" >&2; exit 2 ;;
esac
[[ $dataset == movielens ]] || MODELS="${MODELS:-GRU4Rec SASRec GRU4RecF}"
NAME="$(basename "$EXPORT")"
have_recbole() {
    if [[ -x $RECBOLE_PY ]]; then return 0; fi
    echo "RecBole venv not found ($RECBOLE_PY): skipping the RecBole rows (bash benchmarks/recbole/setup_venv.sh creates it)" >&2
    return 1
}

if [[ $stage == prepare || $stage == tune || $stage == all ]]; then
    prepare
    if [[ -n $MODELS && ! -f $EXPORT/$NAME.export.json ]]; then
        extra_export=()
        [[ $dataset == movielens ]] && extra_export=(--max-history 50)   # see "Pitfalls found", 5
        "$SESSREC_PY" benchmarks/recbole/export.py "$PREPARED" "$EXPORT" "${extra_export[@]}" \
            --properties "$PROPS" --feature-columns "${FEATURE_COLUMNS[@]}"
    fi
fi

if [[ $stage == tune || $stage == all ]]; then
    for study in $STUDIES; do studies "configs/tune/$PREFIX-$study.yaml"; done
    [[ -n $MODELS ]] || echo "RecBole side of $dataset not run (MODELS is empty)" >&2
    if [[ -n $MODELS ]] && have_recbole; then
        for model in $MODELS; do
            "$SESSREC_PY" benchmarks/recbole/tune.py "$EXPORT" --model "$model" --trials 20 --out "runs/tune-recbole/$NAME" \
                --timeout "${TRIAL_TIMEOUT:-900}"
            cp "runs/tune-recbole/$NAME/$model/best.json" "$TUNED/$PREFIX-$model-best.json"
        done
    fi
fi

if [[ $stage == final || $stage == all ]]; then
    if [[ -n $MODELS ]] && have_recbole; then
        for model in $MODELS; do
            mapfile -t sets < <("$SESSREC_PY" -c "import json, sys
for s in json.load(open(sys.argv[1]))['final_sets']:
    print('--set', s, sep=chr(10))" "$TUNED/$PREFIX-$model-best.json")
            for seed in $SEEDS; do
                "$RECBOLE_PY" benchmarks/recbole/run.py "$EXPORT" --model "$model" --seed "$seed" \
                    --config benchmarks/recbole/default.yaml "${sets[@]}" \
                    --train-split train_full --test-weights last \
                    --label "$LABEL" --tag tuned --out "$RECBOLE_OUT" --work-dir "$RECBOLE_WORK"
            done
        done
    fi
    for entry in "${EXPERIMENTS[@]}"; do
        read -r config runs dest <<<"$entry"
        final_runs "$config" "$runs" "$dest"
    done
fi

if [[ $stage == table || $stage == all ]]; then
    paths=()
    [[ -d $RECBOLE_OUT ]] && paths+=("$RECBOLE_OUT")
    for entry in "${EXPERIMENTS[@]}"; do
        read -r _ _ dest <<<"$entry"
        [[ -d $dest ]] && paths+=("$dest")
    done
    for extra in "${TABLE_EXTRA[@]}"; do [[ -d $extra ]] && paths+=("$extra"); done
    have_recbole || true   # leaderboard.py itself skips the RecBole rows without the venv
    "$SESSREC_PY" benchmarks/recbole/leaderboard.py "${paths[@]}" \
        --sessrec-dataset "$PREPARED=$LABEL" --plot "$RESULTS/${RECBOLE_OUT##*/}.png"
fi
