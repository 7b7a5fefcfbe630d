"""benchmarks/recbole/tune.py with a stub for RecBole's run.py: a shared study stops at its trial count,
a failing trial is recorded and the study goes on, best.json holds the final runs' settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

TUNE = Path(__file__).resolve().parents[2] / "benchmarks" / "recbole" / "tune.py"

# Stands in for `RECBOLE_PY run.py DATA --model M --seed S ... --tag trialN --out DIR`: writes run.py's
# JSON (valid MRR@20 = the learning rate, so the best trial is known); fails when the rate is below 2e-4.
STUB = '''
import json, os, sys, time
from pathlib import Path
argv = sys.argv[1:]
opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
sets = dict(a.split("=", 1) for a in argv[argv.index("--set") + 1 :: 2])
lr = float(sets["learning_rate"])
time.sleep(0.2)
if lr < float(os.environ.get("STUB_FAIL_BELOW", "2e-4")):
    sys.exit("stub: diverged")
name = Path(argv[0]).name
extra = {"best_epoch": 2, "epochs_trained": 5, "best_valid_mrr@20": lr, "valid_mrr@20_per_epoch": [lr]}
out = Path(opt["--out"]) / f"{name}-{opt['--model']}-{opt['--tag']}-seed{opt['--seed']}.json"
out.write_text(json.dumps({"extra": extra}))
'''


def _tune(tmp_path: Path, trials: int, fail_below: float = 2e-4) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TUNE), str(tmp_path / "data" / "toy"), "--model", "GRU4Rec", "--trials", str(trials),
         "--out", str(tmp_path / "out"), "--python", sys.executable, "--config", "none.yaml"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "", "STUB_FAIL_BELOW": str(fail_below)},
    )


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    stub = tmp_path / "run.py"
    stub.write_text(STUB)
    # tune.py runs HERE / "run.py": point it at the stub through a copy of tune.py next to it
    copy = tmp_path / "tune.py"
    copy.write_text(TUNE.read_text())
    monkeypatch.setattr(sys.modules[__name__], "TUNE", copy)
    return tmp_path


def test_two_processes_share_one_study_and_stop_at_its_trial_count(stubbed):
    storage = f"sqlite:///{stubbed / 'out' / 'GRU4Rec' / 'study.db'}"
    procs = [_tune(stubbed, trials=6) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    study = optuna.load_study(study_name="toy-GRU4Rec", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    # each process alone would run 6 (12 together); a trial under way when the count is reached may finish
    assert 6 <= len(finished) <= 7
    assert len({tuple(sorted(t.params.items())) for t in finished}) == len(finished)  # no replayed values
    failed = [t for t in finished if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.params["learning_rate"] < 2e-4 for t in failed)
    best = json.loads((stubbed / "out" / "GRU4Rec" / "best.json").read_text())
    assert best["best_valid_mrr@20"] == pytest.approx(max(t.params["learning_rate"] for t in finished
                                                          if t.state == optuna.trial.TrialState.COMPLETE))
    assert "epochs=2" in best["final_sets"] and "stopping_step=3" in best["final_sets"]
    # a rerun of the finished study runs no trial
    again = _tune(stubbed, trials=6)
    assert again.wait(timeout=120) == 0
    assert len(optuna.load_study(study_name="toy-GRU4Rec", storage=storage).trials) == len(study.trials)


def test_a_study_without_a_completed_trial_says_so(stubbed):
    proc = _tune(stubbed, trials=2, fail_below=1.0)  # every trial fails
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    assert output.strip().splitlines()[-1].startswith("GRU4Rec: no trial of ")
    assert len(list((stubbed / "out" / "GRU4Rec" / "trials").glob("*.err"))) == 2
