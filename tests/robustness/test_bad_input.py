"""Bad input through the real CLI: one `sessrec: error:` line naming the file and the problem.

Every case builds its inputs in a fresh folder; test_cli_table.py runs each one as its own process (with
the cases it adds) and checks: a non-zero exit below 128, a last stderr line that starts with
`sessrec: error:` and names the file and the problem, no traceback, inputs unchanged and nothing written.
A handful run here through `python -m sessrec` in a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from robust_helpers import Result, run_cli, run_subprocess

from sessrec.features.store import write_dense

REPO = Path(__file__).resolve().parents[2]
GRU4REC = REPO / "configs" / "gru4rec" / "synthetic.yaml"
EVENTS = "SessionId\tItemId\tTime\n" + "".join(
    f"{s}\t{i}\t{s * 10 + i}\n" for s in range(30) for i in range(3)
)  # 30 sessions of items 0, 1, 2 over 5 minutes


@dataclass
class Case:
    argv: list                  # the command line after `sessrec`
    says: list[str]             # substrings of the error line: the file and the problem
    outputs: list[Path] = field(default_factory=list)  # must hold no file afterwards (Lightning may
    # create an empty run folder before the data is read)


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


def _copy_prepared(small: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(small / "prepared", tmp / "prepared"))


def _fit(tmp: Path, data: Path, *extra) -> list:
    run = tmp / "run"
    return ["fit", "--config", GRU4REC, "--data.data_dir", data, "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", run, "--trainer.callbacks.dirpath", run / "checkpoints",
            "--trainer.enable_progress_bar", "false", "--model.init_args.sample_cache_size", "1000", *extra]


def _prnn_config(tmp: Path, small: Path, encoder: str) -> Path:
    """A p-RNN config with an id subnet and the given extra subnet (YAML flow mapping)."""
    return _write(tmp / "prnn.yaml", f"""\
seed_everything: 1
trainer: {{max_epochs: 1, logger: false, enable_progress_bar: false, enable_checkpointing: false,
          default_root_dir: {tmp / 'run'}}}
model:
  class_path: sessrec.training.module.SessionRecModule
  init_args:
    net:
      class_path: sessrec.models.prnn.ParallelRNN
      init_args:
        encoders:
          id: {{class_path: ItemIdEncoder, init_args: {{dim: 8}}}}
          feat: {encoder}
        layers: [8]
    n_sample: 16
    sample_cache_size: 1000
data: {{data_dir: {small / 'prepared'}, batch_size: 16, train_split: train_full}}
""")


def _image_folder(tmp: Path, n_good: int, n_bad: int) -> Path:
    from PIL import Image

    folder = tmp / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_good):
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    for i in range(n_bad):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 a truncated jpeg")
    return folder


def _shard(tmp: Path) -> Path:
    folder = _image_folder(tmp, 4, 0)
    shards = tmp / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for image in sorted(folder.iterdir()):
            tar.add(image, arcname=image.name)
    return shards / "shard-000000.tar"


class _Payload:
    """Unpickling this would create a marker file: a checkpoint must never get that far."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# ---- the cases: name -> builder(tmp, small) -> Case ------------------------------------------------------
def prepare_missing_column(tmp, small):
    f = _write(tmp / "events.tsv", "session\titem\ttime\n1\t2\t3\n")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "column 'SessionId' not found"],
                [tmp / "out"])


def prepare_misnamed_column_option(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS)
    return Case(["prepare", f, "--out", tmp / "out", "--item-col", "item_id"],
                ["events.tsv", "column 'item_id' not found (columns: SessionId, ItemId, Time)"],
                [tmp / "out"])


def prepare_wrong_type(tmp, small):
    f = _write(tmp / "events.tsv", "SessionId\tItemId\tTime\n1\t2\t3\n1\t3\tsoon\n")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "non-numeric time", "'soon'"],
                [tmp / "out"])


def prepare_empty_file(tmp, small):
    f = _write(tmp / "events.tsv", "")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "file is empty"], [tmp / "out"])


def prepare_header_only(tmp, small):
    f = _write(tmp / "events.tsv", "SessionId\tItemId\tTime\n")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "no rows"], [tmp / "out"])


def prepare_binary_file(tmp, small):
    f = _write(tmp / "events.tsv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # an image, not a log
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "cannot read as tsv"], [tmp / "out"])


def prepare_missing_ids(tmp, small):
    f = _write(tmp / "events.tsv", "SessionId\tItemId\tTime\n1\t\t3\n")
    return Case(["prepare", f, "--out", tmp / "out"], ["events.tsv", "column 'ItemId' has 1 missing value"],
                [tmp / "out"])


def prepare_all_sessions_filtered(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS)  # every item has 30 events, every session 3
    return Case(["prepare", f, "--out", tmp / "out", "--min-item-support", "31"],
                ["events.tsv", "no events left after the minimum-support filter"], [tmp / "out"])


def prepare_everything_in_test(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS)  # spans minutes: every session ends in the last 7 days
    return Case(["prepare", f, "--out", tmp / "out", "--min-item-support", "1"],
                ["events.tsv", "train_full is empty"], [tmp / "out"])


def prepare_invalid_option(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS)
    return Case(["prepare", f, "--out", tmp / "out", "--min-session-length", "1"],
                ["min_session_length", "must be >= 2"], [tmp / "out"])


def prepare_unparseable_option(tmp, small):
    f = _write(tmp / "events.tsv", EVENTS)
    return Case(["prepare", f, "--out", tmp / "out", "--test-days", "a week"],
                ["prepare: argument --test-days", "invalid float value"], [tmp / "out"])


def prepare_output_under_a_file(tmp, small):
    _write(tmp / "afile", "")
    return Case(["prepare", small / "raw" / "events.tsv", "--out", tmp / "afile" / "out"],
                ["afile", "cannot create output folder"], [tmp / "afile" / "out"])


def prepare_output_is_a_file(tmp, small):
    f = _write(tmp / "events.tsv", (small / "raw" / "events.tsv").read_text())
    return Case(["prepare", f, "--out", f, "--overwrite"], ["events.tsv", "is a file, not an output folder"])


def prepare_unwritable_output_folder(tmp, small):
    if os.geteuid() == 0:  # root writes anywhere: the kernel's /proc refuses new files even to root
        return Case(["prepare", small / "raw" / "events.tsv", "--out", "/proc/sessrec-out"],
                    ["/proc", "cannot write in the output folder"], [Path("/proc/sessrec-out")])
    locked = tmp / "locked"
    locked.mkdir(mode=0o555)
    return Case(["prepare", small / "raw" / "events.tsv", "--out", locked / "out"],
                ["locked", "not writable"], [locked / "out"])


def fit_missing_data_folder(tmp, small):
    return Case(_fit(tmp, tmp / "nope"), ["nope", "prepared data folder not found"], [tmp / "run"])


def fit_prepared_file_missing(tmp, small):
    data = _copy_prepared(small, tmp)
    (data / "items.parquet").unlink()
    return Case(_fit(tmp, data), ["items.parquet", "file missing from the prepared data folder"],
                [tmp / "run"])


def fit_corrupt_parquet(tmp, small):
    data = _copy_prepared(small, tmp)
    raw = (data / "train_full.parquet").read_bytes()
    (data / "train_full.parquet").write_bytes(raw[: len(raw) // 2])
    return Case(_fit(tmp, data), ["train_full.parquet", "cannot read as parquet"], [tmp / "run"])


def fit_wrong_column_type(tmp, small):
    data = _copy_prepared(small, tmp)
    table = pq.read_table(data / "train_full.parquet")
    table = table.set_column(1, "item", pa.array([str(v) for v in table.column("item").to_pylist()]))
    pq.write_table(table, data / "train_full.parquet")
    return Case(_fit(tmp, data), ["train_full.parquet", "column 'item' must hold integers"], [tmp / "run"])


def evaluate_unknown_item_ids(tmp, small):
    data = _copy_prepared(small, tmp)
    table = pq.read_table(data / "test.parquet")
    items = np.array(table.column("item").to_pylist(), dtype=np.int32)
    items[3] = 10_000  # no such item index
    pq.write_table(table.set_column(1, "item", pa.array(items)), data / "test.parquet")
    return Case(["test", "--config", REPO / "configs" / "baselines" / "pop.yaml", "--data.data_dir", data],
                ["test.parquet", "index 10000 out of range"])


def config_missing_class(tmp, small):
    config = _write(tmp / "bad.yaml", GRU4REC.read_text().replace(
        "sessrec.models.gru4rec.GRU4Rec", "sessrec.models.gru5rec.GRU5Rec"))
    return Case(["fit", "--config", config, "--data.data_dir", small / "prepared"],
                ["bad.yaml", "model.net: class_path 'sessrec.models.gru5rec.GRU5Rec'",
                 "has no attribute 'gru5rec'"],
                [tmp / "runs"])


def config_file_missing(tmp, small):
    return Case(["fit", "--config", tmp / "absent.yaml"], ["absent.yaml", "does not exist"])


def config_invalid_combination(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--model.init_args.negatives", "all"),
                ["logq=1.0", "negatives='all'"], [tmp / "run"])


def config_invalid_value(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--model.init_args.net.init_args.layers", "[0]"),
                ["model.net.layers must be a non-empty list of positive sizes"], [tmp / "run"])


def config_negative_lr(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--model.init_args.lr", "-1"),
                ["lr must be > 0, got -1.0"], [tmp / "run"])


def config_wrong_type(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--trainer.max_epochs", "many"),
                ["trainer.max_epochs", "Expected int", "'many'", "synthetic.yaml"], [tmp / "run"])


def config_unknown_option(tmp, small):
    return Case(_fit(tmp, small / "prepared", "--model.init_args.nope", "1"),
                ["synthetic.yaml", "SessionRecModule", "Option 'nope' is not accepted"], [tmp / "run"])


def checkpoint_missing(tmp, small):
    return Case(["test", "--config", GRU4REC, "--data.data_dir", small / "prepared", "--ckpt_path",
                 tmp / "absent.ckpt"], ["absent.ckpt", "checkpoint not found"])


def checkpoint_truncated(tmp, small):
    path = tmp / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100, 100)}, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:20_000])
    return Case(["test", "--config", GRU4REC, "--data.data_dir", small / "prepared", "--ckpt_path", path],
                ["model.ckpt", "cannot load as a checkpoint"])


def checkpoint_executes_code(tmp, small):
    _Payload.marker = str(tmp / "pwned")
    path = _write(tmp / "evil.ckpt", pickle.dumps({"state_dict": {}, "x": _Payload()}, protocol=2))
    return Case(["test", "--config", GRU4REC, "--data.data_dir", small / "prepared", "--ckpt_path", path],
                ["evil.ckpt", "cannot load as a checkpoint"], [tmp / "pwned"])


def _n_items(small) -> int:
    return pq.read_table(small / "prepared" / "items.parquet").num_rows


def checkpoint_of_other_data(tmp, small):
    path = tmp / "other.ckpt"
    torch.save({"state_dict": {"net.item_table": torch.zeros(5000, 100)}, "hyper_parameters": {}}, path)
    return Case(["test", "--config", GRU4REC, "--data.data_dir", small / "prepared", "--ckpt_path", path],
                ["other.ckpt", f"'net.item_table' has shape [5000, 100] in the checkpoint but [{_n_items(small)}, "])


def features_nan(tmp, small):
    ids = (small / "prepared" / "items.parquet")
    item_ids = pq.read_table(ids).column("item_id").to_pylist()
    values = np.ones((len(item_ids), 4), np.float32)
    write_dense(tmp / "vec.npy", values, item_ids)
    values[7, 2] = np.nan
    np.save(tmp / "vec.npy", values)  # bypasses write_dense, which refuses NaN
    config = _prnn_config(tmp, small, f"{{class_path: DenseEncoder, init_args: {{path: {tmp / 'vec.npy'}}}}}")
    return Case(["fit", "--config", config], ["vec.npy", "1 rows hold NaN or inf values"], [tmp / "run"])


def features_infinite_property(tmp, small):
    frame = pq.read_table(small / "raw" / "items.parquet").to_pandas()
    frame.loc[3, "price"] = np.inf
    frame.to_parquet(tmp / "props.parquet")
    enc = f"{{class_path: PropertyEncoder, init_args: {{path: {tmp / 'props.parquet'}, numeric: [price]}}}}"
    return Case(["fit", "--config", _prnn_config(tmp, small, enc)], ["props.parquet", "inf values"],
                [tmp / "run"])


def features_rows_not_matching_ids(tmp, small):
    item_ids = pq.read_table(small / "prepared" / "items.parquet").column("item_id").to_pylist()
    write_dense(tmp / "vec.npy", np.ones((len(item_ids), 4), np.float32), item_ids)
    (tmp / "vec.ids.txt").write_text("\n".join(item_ids[:-5]) + "\n")
    config = _prnn_config(tmp, small, f"{{class_path: DenseEncoder, init_args: {{path: {tmp / 'vec.npy'}}}}}")
    return Case(["fit", "--config", config], ["vec.npy", f"{len(item_ids)} rows but vec.ids.txt lists {len(item_ids) - 5} item ids"],
                [tmp / "run"])


def features_of_another_catalogue(tmp, small):
    write_dense(tmp / "vec.npy", np.ones((3, 4), np.float32), ["x", "y", "z"])
    config = _prnn_config(tmp, small, f"{{class_path: DenseEncoder, init_args: {{path: {tmp / 'vec.npy'}}}}}")
    return Case(["fit", "--config", config], ["vec.npy", f"covers none of the {_n_items(small)} catalogue items"],
                [tmp / "run"])


def features_wrong_dimension(tmp, small):
    enc = f"{{class_path: DenseEncoder, init_args: {{path: {small / 'raw' / 'image.npy'}, dim: 8}}}}"
    return Case(["fit", "--config", _prnn_config(tmp, small, enc)], ["image.npy", "but 8 expected"],
                [tmp / "run"])


def features_file_missing(tmp, small):
    enc = "{class_path: SparseTextEncoder, init_args: {path: nowhere/text.npz}}"
    return Case(["fit", "--config", _prnn_config(tmp, small, enc)], ["text.npz", "feature file not found"],
                [tmp / "run"])


def predict_output_is_a_folder(tmp, small):
    (tmp / "recs.csv").mkdir()
    return Case(["predict", "--config", REPO / "configs" / "baselines" / "pop.yaml", "--config",
                 REPO / "configs" / "predict.yaml", "--data.data_dir", small / "prepared",
                 "--trainer.callbacks.output", tmp / "recs.csv"], ["recs.csv", "is a folder"])


def predict_output_format(tmp, small):
    return Case(["predict", "--config", REPO / "configs" / "baselines" / "pop.yaml", "--config",
                 REPO / "configs" / "predict.yaml", "--data.data_dir", small / "prepared",
                 "--trainer.callbacks.output", tmp / "recs.xlsx"], ["recs.xlsx", "extension must be one of"],
                [tmp / "recs.xlsx"])


def extract_all_images_corrupt(tmp, small):
    folder = _image_folder(tmp, 0, 2)
    return Case(["extract", "image", folder, "--out", tmp / "img.npy", "--size", "32", "--workers", "0",
                 "--no-progress"], ["images", "none of the 2 images could be decoded"],
                [tmp / "img.npy", tmp / "img.ids.txt", tmp / "img.npy.parts"])


def extract_truncated_shard(tmp, small):
    shard = _shard(tmp)
    shard.write_bytes(shard.read_bytes()[:3000])
    return Case(["extract", "image", shard.parent, "--out", tmp / "img.npy", "--workers", "0",
                 "--no-progress"],
                ["shard-000000.tar", "cannot read as a tar shard"], [tmp / "img.npy", tmp / "img.npy.parts"])


def extract_not_a_tar(tmp, small):
    _write(tmp / "shards" / "shard-000000.tar", b"hello" * 200)
    return Case(["extract", "image", tmp / "shards", "--out", tmp / "img.npy", "--workers", "0"],
                ["shard-000000.tar", "cannot read as a tar shard"], [tmp / "img.npy", tmp / "img.npy.parts"])


def extract_text_missing_column(tmp, small):
    return Case(["extract", "text", small / "raw" / "items.parquet", "--out", tmp / "text.npz",
                 "--text-cols", "description"], ["items.parquet", "column 'description' not found"],
                [tmp / "text.npz", tmp / "text.ids.txt"])


def extract_properties_wrong_type(tmp, small):
    _write(tmp / "items.csv", "item_id,price\na,1.5\nb,cheap\n")
    return Case(["extract", "properties", tmp / "items.csv", "--out", tmp / "props.parquet",
                 "--numeric", "price"],
                ["items.csv", "column 'price' must be numeric"], [tmp / "props.parquet"])


def extract_wrong_output_extension(tmp, small):
    return Case(["extract", "text", small / "raw" / "items.parquet", "--out", tmp / "text.csv",
                 "--text-cols", "text"], ["text.csv", "written as .npz"], [tmp / "text.csv"])


def extract_output_under_a_file(tmp, small):
    folder = _image_folder(tmp, 2, 0)
    _write(tmp / "afile", "")
    return Case(["extract", "image", folder, "--out", tmp / "afile" / "img.npy", "--size", "32",
                 "--workers", "0"],
                ["afile", "cannot create"], [tmp / "afile" / "img.npy"])


CASES: dict[str, Callable] = {f.__name__: f for f in [
    prepare_missing_column, prepare_misnamed_column_option, prepare_wrong_type, prepare_empty_file,
    prepare_header_only, prepare_binary_file, prepare_missing_ids, prepare_all_sessions_filtered,
    prepare_everything_in_test, prepare_invalid_option, prepare_unparseable_option,
    prepare_output_under_a_file, prepare_output_is_a_file, prepare_unwritable_output_folder,
    fit_missing_data_folder, fit_prepared_file_missing, fit_corrupt_parquet, fit_wrong_column_type,
    evaluate_unknown_item_ids, config_missing_class, config_file_missing, config_invalid_combination, config_negative_lr,
    config_invalid_value, config_wrong_type, config_unknown_option, checkpoint_missing, checkpoint_truncated,
    checkpoint_executes_code, checkpoint_of_other_data, features_nan, features_infinite_property,
    features_rows_not_matching_ids, features_of_another_catalogue, features_wrong_dimension,
    features_file_missing, predict_output_is_a_folder, predict_output_format, extract_all_images_corrupt,
    extract_truncated_shard, extract_not_a_tar, extract_text_missing_column, extract_properties_wrong_type,
    extract_wrong_output_extension, extract_output_under_a_file,
]}


def _check(result, case: Case, tmp: Path) -> None:
    assert result.code not in (0, None), f"exit {result.code}\n{result.err[-2000:]}"
    assert "Traceback" not in result.err, result.err[-3000:]
    line = result.last_line
    assert line.startswith("sessrec: error: "), result.err[-2000:]
    for part in case.says:
        assert str(part) in line, f"{part!r} not in {line!r}"
    for path in case.outputs:
        written = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        assert not written, f"{written} written"
    leftovers = [p for p in tmp.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers


def test_enough_kinds_of_bad_input() -> None:
    assert len(CASES) >= 15


def test_one_corrupt_image_is_skipped_with_a_warning(tmp_path: Path, capsys, caplog, monkeypatch) -> None:
    """A corrupt image among good ones is left out (and named), not fatal: the store masks the item."""
    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    folder = _image_folder(tmp_path, 3, 1)
    result = run_cli(["extract", "image", folder, "--out", tmp_path / "img.npy", "--size", "32",
                      "--workers", "0", "--no-progress"], capsys)
    assert result.code == 0, result.err
    assert "1 unreadable images" in result.out
    assert "bad0.jpg: cannot decode image of item 'bad0'" in caplog.text
    assert (tmp_path / "img.ids.txt").read_text().split() == ["0", "1", "2"]
    assert not (tmp_path / "img.npy.parts").exists()


@pytest.mark.parametrize("name", ["prepare_wrong_type", "config_missing_class", "extract_truncated_shard"])
def test_bad_input_subprocess(name: str, small: Path, tmp_path: Path) -> None:
    """The same through `python -m sessrec` in a fresh interpreter: exit status 2, one line."""
    case = CASES[name](tmp_path, small)
    proc = run_subprocess(case.argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    _check(Result(proc.returncode, proc.stdout, proc.stderr), case, tmp_path)
