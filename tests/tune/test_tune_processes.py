"""Persistent storage: a study killed with SIGKILL resumes; two processes share one study."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sessrec.tune.study as tune_study
from tune_helpers import write_tune
from sessrec.cli import main

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "sessrec", "tune", "--config", str(config)],
                                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=config.parent)


def _study(out: Path) -> optuna.Study | None:
    if not (out / "study.db").is_file():
        return None
    with open(out / ".study.db.lock", "a") as lock:  # tune's creation lock: no CREATE TABLE race with it
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
        except Exception:  # not created yet
            return None


def _wait_for(proc: subprocess.Popen, out: Path, ready, seconds: float = 90) -> optuna.Study:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        study = _study(out)
        if study is not None and ready(study.get_trials(deepcopy=False)):
            return study
        assert proc.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the study")


def test_killed_study_resumes_and_completes_its_count(tmp_path, small, monkeypatch, caplog):
    overrides = {"data.data_dir": str(small / "prepared"), "trainer.max_epochs": 6,
                 "model.init_args.n_sample": 64, "model.init_args.logq": 0.0}
    config = write_tune(tmp_path, small / "prepared", n_trials=4, overrides=overrides, pruner=False)
    out = tmp_path / "out"
    proc = _start(config, tmp_path / "first.log")

    def mid_trial(trials):  # one trial done, the next one training with its values drawn
        states = [t.state for t in trials]
        return (TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING
                and len(trials[-1].params) == len(trials[0].params))  # every value drawn (no conditions here)

    try:
        study = _wait_for(proc, out, mid_trial)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = study.get_trials(deepcopy=False)[-1]
    assert proc.returncode == -signal.SIGKILL and killed.state == TrialState.RUNNING
    # The killed trial's heartbeat stops; with a 1 s grace the resumed process fails it and retries it.
    monkeypatch.setattr(tune_study, "GRACE_S", 1)
    time.sleep(1.5)
    with pytest.raises(SystemExit) as stop:
        main(["tune", "--config", str(config)])
    assert stop.value.code == 0
    trials = _study(out).get_trials(deepcopy=False)
    assert len([t for t in trials if t.state in FINISHED]) == 4 and len(trials) == 4
    assert trials[killed.number].state == TrialState.FAIL  # stale: marked by Optuna's heartbeat check
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert retried[0].state == TrialState.COMPLETE
    assert re.search(r"[2-9] trial\(s\) in storage", caplog.text)
    assert (out / "best.yaml").is_file()


def test_two_processes_share_one_study(tmp_path, small):
    config = write_tune(tmp_path, small / "prepared", n_trials=4)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start(config, log) for log in logs]
    for proc in procs:
        proc.wait(timeout=240)
    texts = [log.read_text() for log in logs]
    assert [p.returncode for p in procs] == [0, 0], texts
    ran = [{int(n) for n in re.findall(r"^trial (\d+) \w+", text, re.M)} for text in texts]
    assert ran[0] and ran[1] and not ran[0] & ran[1], ran  # each process ran its own trials
    trials = _study(tmp_path / "out").get_trials(deepcopy=False)
    assert {t.number for t in trials} == ran[0] | ran[1]  # total = the sum of both
    assert len(trials) >= 4 and all(t.state in FINISHED for t in trials)


def test_tables_created_meanwhile_by_another_process_are_opened(tmp_path, small, monkeypatch):
    """SQLAlchemy's CREATE TABLE races with a process outside sessrec's lock (optuna.load_study on the same
    file): the one that loses gets "table ... already exists"; opening again finds the tables."""
    from sqlalchemy.exc import OperationalError

    from sessrec.tune.spec import load_tune

    real = optuna.storages.RDBStorage
    calls = []

    class Racing(real):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                real(*args, **kwargs)  # the other process wins the race: the tables exist now
                raise OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    spec = load_tune(write_tune(tmp_path, small / "prepared"))
    study = tune_study.open_study(spec)
    assert len(calls) == 2 and study.study_name == spec.study_name
