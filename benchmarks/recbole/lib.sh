# Shared by tuned_leaderboard.sh and tuned_diginetica.sh (sourced, from the project root; needs SESSREC_PY).

# studies TUNE_FILE...: run each study (a finished one is not rerun: sessrec tune resumes and counts
# finished trials) and copy its best.yaml (runs/tune-<name>/) to benchmarks/recbole/tuned/<name>-best.yaml
studies() {
    local tune_file name
    for tune_file in "$@"; do
        "$SESSREC_PY" -m sessrec tune --config "$tune_file"
        name=$(basename "$tune_file" .yaml)
        cp "runs/tune-$name/best.yaml" "benchmarks/recbole/tuned/$name-best.yaml"
    done
}

# final_runs CONFIG RUNS DEST: run the experiment file CONFIG (finished runs are skipped), then copy each
# finished run's result.json and run.yaml from its out_dir RUNS to DEST/<run>/
final_runs() {
    local run dest
    "$SESSREC_PY" -m sessrec experiment --config "$1"
    for run in "$2"/*/; do
        [[ -f $run/result.json ]] || continue
        dest="$3/$(basename "$run")"
        mkdir -p "$dest" && cp "$run/result.json" "$run/run.yaml" "$dest/"
    done
}
