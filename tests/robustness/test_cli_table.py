"""Every bad input through the real CLI, each in its own process: the table of what users get wrong.

Each case is a command line run by `zygote.py` in a forked child of one warm interpreter (a real process
with its own exit status; see that file). What every case must show:
- an exit status that is non-zero and below 128 (no crash: a signal shows as a negative status);
- no traceback, and a last stderr line `sessrec: error: ...` naming the file or option and the problem;
- every input byte-identical afterwards, nothing new written anywhere (temporary leftovers included).
The cases of test_bad_input.py run here too; this file adds the inputs that once deleted data, crashed
the interpreter, trained a NaN model that tested as perfect, or failed only after training.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from robust_helpers import HERE, subprocess_env
from test_bad_input import CASES as BASIC_CASES
from test_bad_input import EVENTS, GRU4REC, REPO, Case, _fit, _prnn_config, _write

# ---- the harness -----------------------------------------------------------------------------------------


class Zygote:
    """One `zygote.py` server for the whole test session."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "zygote.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=subprocess_env())
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, argv: list, cwd: Path, logs: Path, timeout: float = 240) -> tuple[int, str, str]:
        out, err = logs / "stdout.txt", logs / "stderr.txt"
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "stdout": str(out), "stderr": str(err),
                   "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        status = json.loads(self.proc.stdout.readline())["status"]
        return status, out.read_text(errors="replace"), err.read_text(errors="replace")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    server = Zygote()
    yield server
    server.close()


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (or of `root` itself), by relative path."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---- the new cases: name -> builder(tmp, small) -> Case -------------------------------------------------


def _events(tmp: Path, name: str = "events.tsv") -> Path:
    return _write(tmp / name, EVENTS)


def prepare_out_is_the_input_folder(tmp, small):
    f = _events(tmp / "logs")
    return Case(["prepare", f, "--out", tmp / "logs", "--overwrite"], ["--out", "logs", "events.tsv"])


def prepare_out_contains_the_input(tmp, small):
    f = _events(tmp / "work" / "logs")
    return Case(["prepare", f, "--out", tmp / "work", "--overwrite"], ["--out", "work", "events.tsv"])


def prepare_out_is_the_working_directory(tmp, small):
    f = _events(tmp / "logs")
    return Case(["prepare", f, "--out", ".", "--overwrite"], ["--out", "working directory"])


def prepare_out_contains_the_working_directory(tmp, small):
    f = _events(tmp / "logs")
    return Case(["prepare", f, "--out", "..", "--overwrite"], ["--out", "working directory"])


def generate_out_is_the_working_directory(tmp, small):
    return Case(["generate", "--out", ".", "--overwrite", "--n-items", "50", "--n-sessions", "100"],
                ["--out", "working directory"])


def extract_text_out_is_the_input(tmp, small):
    items = _write(tmp / "items.csv", "item_id,text\na,red shoe\nb,blue shoe\n")
    return Case(["extract", "text", items, "--out", tmp / "items.csv", "--text-cols", "text"],
                ["items.csv"])


def _tune_file(tmp: Path, small: Path, out: str) -> Path:
    import yaml

    return _write(tmp / "tune" / "tune.yaml", yaml.safe_dump({
        "base": str(GRU4REC), "overrides": {"data.data_dir": str(small / "prepared")},
        "space": {"model.init_args.lr": {"float": [0.01, 0.1]}}, "n_trials": 1, "out": out}))


def tune_out_is_the_working_directory(tmp, small):
    return Case(["tune", "--config", _tune_file(tmp, small, ".")], ["tune.yaml: out", "working directory"])


def tune_out_contains_the_tune_file(tmp, small):
    return Case(["tune", "--config", _tune_file(tmp, small, str(tmp / "tune"))],
                ["tune.yaml: out", "contains the input"])


def tune_out_inside_the_data(tmp, small):
    return Case(["tune", "--config", _tune_file(tmp, small, str(small / "prepared" / "tuning"))],
                ["tune.yaml: out", "lies inside the input"])


def prepare_truncated_gzip(tmp, small):
    data = gzip.compress((small / "raw" / "events.tsv").read_bytes())
    f = _write(tmp / "events.tsv.gz", data[: len(data) // 2])
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv.gz"], [tmp / "out"])


def prepare_truncated_bz2(tmp, small):
    data = bz2.compress((small / "raw" / "events.tsv").read_bytes())
    f = _write(tmp / "events.tsv.bz2", data[: len(data) // 2])
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv.bz2"], [tmp / "out"])


def prepare_zstd_without_its_package(tmp, small):
    pytest.importorskip("sessrec")  # the case only applies where zstandard is absent
    try:
        import zstandard  # noqa: F401
    except ImportError:
        f = _write(tmp / "events.tsv.zst", b"(\xb5/\xfd" + b"\0" * 64)
        return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv.zst", "zstandard"], [tmp / "out"])
    pytest.skip("zstandard is installed")


def prepare_infinite_time(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS + "99\t1\tinf\n")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "Time"], [tmp / "out"])


def prepare_nan_test_days(tmp, small):
    return Case(["prepare", _events(tmp), "--out", tmp / "out", "--test-days", "nan"], ["--test-days"],
                [tmp / "out"])


def prepare_negative_valid_days(tmp, small):
    return Case(["prepare", _events(tmp), "--out", tmp / "out", "--valid-days", "-1"], ["--valid-days"],
                [tmp / "out"])


def prepare_zero_item_support(tmp, small):
    return Case(["prepare", _events(tmp), "--out", tmp / "out", "--min-item-support", "0"],
                ["--min-item-support"], [tmp / "out"])


def prepare_infinite_session_gap(tmp, small):
    return Case(["prepare", _events(tmp), "--out", tmp / "out", "--format", "movielens", "--session-gap",
                 "inf"], ["--session-gap"], [tmp / "out"])


def _option(tmp, small, key: str, value: str, says: list[str]) -> Case:
    return Case(_fit(tmp, small / "prepared", f"--model.init_args.{key}", value), says, [tmp / "run"])


def config_nan_lr(tmp, small):
    return _option(tmp, small, "lr", "nan", ["lr"])


def config_infinite_lr(tmp, small):
    return _option(tmp, small, "lr", "inf", ["lr"])


def config_nan_logq(tmp, small):
    return _option(tmp, small, "logq", "nan", ["logq"])


def config_infinite_bpreg(tmp, small):
    return _option(tmp, small, "bpreg", "inf", ["bpreg"])


def config_weight_decay_ignored(tmp, small):
    return _option(tmp, small, "weight_decay", "0.01", ["weight_decay"])


def config_zero_eval_top_n(tmp, small):
    return _option(tmp, small, "eval_top_n", "0", ["eval_top_n"])


def config_negative_eval_top_n(tmp, small):
    return _option(tmp, small, "eval_top_n", "-5", ["eval_top_n"])


def config_zero_batch_size(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--data.batch_size", "0"), ["batch_size"], [tmp / "run"])


def config_negative_max_epochs(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--trainer.max_epochs", "-3"), ["max_epochs"], [tmp / "run"])


def config_gpu_on_a_cpu_machine(tmp, small):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return Case(_fit(tmp, small / "prepared", "--trainer.accelerator", "gpu"), ["accelerator"],
                [tmp / "run"])


def config_yaml_syntax_error(tmp, small):
    config = _write(tmp / "broken.yaml", "trainer:\n  max_epochs: 1\n model: [unclosed\n")
    return Case(["fit", "--config", config], ["broken.yaml", "line"])


def fit_checkpoint_folder_under_a_file(tmp, small):
    _write(tmp / "afile", "")
    argv = _fit(tmp, small / "prepared")
    argv[argv.index("--trainer.callbacks.dirpath") + 1] = tmp / "afile" / "checkpoints"
    return Case(argv, ["afile"], [tmp / "run"])


def checkpoint_of_another_architecture(tmp, small):
    path = tmp / "prnn.ckpt"
    state = {"net.subnets.id.encoder.table.weight": torch.zeros(5, 8), "net.fusion.weight": torch.zeros(3)}
    torch.save({"state_dict": state, "hyper_parameters": {}}, path)
    return Case(["test", "--config", GRU4REC, "--data.data_dir", small / "prepared", "--ckpt_path", path],
                ["prnn.ckpt"])


def _item_ids(small: Path) -> list[str]:
    return [str(v) for v in pq.read_table(small / "prepared" / "items.parquet").column("item_id").to_pylist()]


def _sparse_case(tmp, small, bad_index: int) -> Case:
    ids = _item_ids(small)
    n, v = len(ids), 20
    indptr = np.arange(n + 1, dtype=np.int32)
    indices = np.full(n, 3, dtype=np.int32)
    indices[n // 2] = bad_index
    np.savez(tmp / "text.npz", indices=indices, indptr=indptr, format=np.array("csr"),
             shape=np.array([n, v]), data=np.ones(n, dtype=np.float32))
    (tmp / "text.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    enc = f"{{class_path: SparseTextEncoder, init_args: {{path: {tmp / 'text.npz'}}}}}"
    return Case(["fit", "--config", _prnn_config(tmp, small, enc)], ["text.npz"], [tmp / "run"])


def features_sparse_index_out_of_range(tmp, small):
    return _sparse_case(tmp, small, 10_000_000)


def features_sparse_negative_index(tmp, small):
    return _sparse_case(tmp, small, -2)


def features_property_overflows_float32(tmp, small):
    frame = pq.read_table(small / "raw" / "items.parquet").to_pandas()
    frame.loc[3, "price"] = 1e39
    frame.to_parquet(tmp / "props.parquet")
    enc = f"{{class_path: PropertyEncoder, init_args: {{path: {tmp / 'props.parquet'}, numeric: [price]}}}}"
    return Case(["fit", "--config", _prnn_config(tmp, small, enc)], ["props.parquet", "price"], [tmp / "run"])


def features_dense_overflows_float32(tmp, small):
    ids = _item_ids(small)
    values = np.ones((len(ids), 4), np.float64)
    values[5, 1] = 1e39
    np.save(tmp / "vec.npy", values)
    (tmp / "vec.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    config = _prnn_config(tmp, small, f"{{class_path: DenseEncoder, init_args: {{path: {tmp / 'vec.npy'}}}}}")
    return Case(["fit", "--config", config], ["vec.npy"], [tmp / "run"])


NEW_CASES: dict[str, Callable] = {f.__name__: f for f in [
    prepare_out_is_the_input_folder, prepare_out_contains_the_input, prepare_out_is_the_working_directory,
    prepare_out_contains_the_working_directory, generate_out_is_the_working_directory,
    extract_text_out_is_the_input, tune_out_is_the_working_directory, tune_out_contains_the_tune_file,
    tune_out_inside_the_data, prepare_truncated_gzip, prepare_truncated_bz2,
    prepare_zstd_without_its_package, prepare_infinite_time, prepare_nan_test_days,
    prepare_negative_valid_days, prepare_zero_item_support, prepare_infinite_session_gap, config_nan_lr,
    config_infinite_lr, config_nan_logq, config_infinite_bpreg, config_weight_decay_ignored,
    config_zero_eval_top_n, config_negative_eval_top_n, config_zero_batch_size, config_negative_max_epochs,
    config_gpu_on_a_cpu_machine, config_yaml_syntax_error, fit_checkpoint_folder_under_a_file,
    checkpoint_of_another_architecture, features_sparse_index_out_of_range, features_sparse_negative_index,
    features_property_overflows_float32, features_dense_overflows_float32,
]}
ALL_CASES = {**BASIC_CASES, **NEW_CASES}


def test_the_table_is_wide() -> None:
    assert len(ALL_CASES) >= 60
    assert not set(BASIC_CASES) & set(NEW_CASES)


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_bad_input_in_its_own_process(name: str, small: Path, tmp_path: Path, zygote: Zygote) -> None:
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    logs.mkdir()
    case = ALL_CASES[name](work, small)
    before_work, before_small = _digest(work), _digest(small)
    status, out, err = zygote.run(case.argv, cwd=work, logs=logs)
    assert 0 < status < 128, f"exit status {status}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("sessrec: error: "), err[-2000:]
    for part in case.says:
        assert str(part) in lines[-1], f"{part!r} not in {lines[-1]!r}"
    assert _digest(small) == before_small, "the shared prepared data changed"
    after = _digest(work)
    changed = [p for p, h in before_work.items() if after.get(p) != h]
    assert not changed, f"inputs changed or removed: {changed}"
    new = [p for p in after if p not in before_work and not p.endswith(".lock")]
    assert not new, f"written although the command failed: {new}"


def test_a_crash_would_be_caught(tmp_path: Path, zygote: Zygote) -> None:
    """The harness itself: a child that dies by a signal reports it (so the status check can fail)."""
    zygote.proc.stdin.write(json.dumps({"argv": [], "cwd": str(tmp_path), "stdout": str(tmp_path / "o"),
                                        "stderr": str(tmp_path / "e"), "exec": "import os, signal; "
                                        "os.kill(os.getpid(), signal.SIGSEGV)"}) + "\n")
    zygote.proc.stdin.flush()
    assert json.loads(zygote.proc.stdout.readline())["status"] == -11
