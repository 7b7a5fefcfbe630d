"""notebooks/analysis.ipynb: runs end to end on tiny runs (plots and bucket table rendered); stored clean."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from sessrec.cli import main

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"

MODELS = {
    "gru4rec": """
    net:
      class_path: sessrec.models.gru4rec.GRU4Rec
      init_args: {layers: [16]}""",
    "prnn": """
    net:
      class_path: sessrec.models.prnn.ParallelRNN
      init_args:
        encoders:
          id: {class_path: ItemIdEncoder, init_args: {dim: 16}}
          image: {class_path: DenseEncoder, init_args: {path: ../raw/image.npy, normalize: true}}
        layers: [16]""",
}


def _config(name: str, run_dir: Path, data_dir: Path) -> str:
    """One epoch on the tiny data, validated at its end, logged by CSVLogger at every step."""
    return f"""
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {run_dir}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {run_dir}, name: logs}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run_dir}/checkpoints, save_last: true, save_top_k: 0}}
model:
  class_path: sessrec.training.module.SessionRecModule
  init_args:{MODELS[name]}
    n_sample: 32
    lr: 0.1
data:
  data_dir: {data_dir}
  batch_size: 32
  train_split: train
  val_split: valid
"""


@pytest.fixture(scope="module")
def notebook_parameters(tiny_prepared: Path, tmp_path_factory) -> dict:
    """Trains the tiny runs (in-process `sessrec fit`) and returns the notebook's parameter overrides."""
    root = tmp_path_factory.mktemp("analysis")
    runs = {}
    for name in MODELS:
        config = root / f"{name}.yaml"
        config.write_text(_config(name, root / "runs" / name, tiny_prepared))
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config)])
        assert exit_info.value.code == 0
        runs[name] = str(root / "runs" / name)
    pop = root / "pop.yaml"
    pop.write_text(f"model: {{class_path: sessrec.baselines.module.BaselineModule, init_args: {{net: "
                   f"{{class_path: sessrec.baselines.Pop}}}}}}\ndata: {{data_dir: {tiny_prepared}}}\n")
    runs["pop"] = {"config": str(pop), "checkpoint": None}
    experiment = root / "experiment"
    experiment.mkdir()
    pd.DataFrame({"run": ["x"], "test_recall@20": [0.5]}).to_csv(experiment / "results.csv", index=False)
    images = root / "images"  # thumbnails for half of the items: drawn ones and id tiles
    images.mkdir()
    from PIL import Image

    item_ids = pd.read_parquet(tiny_prepared / "items.parquet")["item_id"].astype(str)
    for i, item in enumerate(item_ids[::2]):
        Image.new("RGB", (24, 24), (i * 37 % 256, 90, 160)).save(images / f"{item}.png")
    # a user's own items table: CSV, another id column name, missing values in a shown column
    items = pd.read_parquet(tiny_prepared.parent / "raw" / "items.parquet").rename(columns={"item_id": "article_id"})
    items.loc[::3, "brand"] = None
    items.to_csv(root / "articles.csv", index=False)
    return {
        "PROJECT_ROOT": str(REPO),
        "RUNS": runs,
        "EXPERIMENT_DIR": str(experiment),
        "ITEMS_FILE": str(root / "articles.csv"),
        "ITEMS_ID_COLUMN": "article_id",
        "IMAGE_DIR": str(images),
        "N_EXAMPLES": 2,
        "OUT": str(root / "out"),
    }


def test_notebook_runs_on_a_tiny_run(notebook_parameters, tmp_path):
    """Through the documented command: `sessrec notebook --out X -p NAME VALUE ...` (YAML values)."""
    out = Path(notebook_parameters.pop("OUT"))
    out.mkdir()
    source = tmp_path / "analysis.ipynb"  # the notebook plus a last cell that hands the tables to the test
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"buckets.to_csv({str(out / 'buckets.csv')!r}); overall.to_csv({str(out / 'overall.csv')!r})"
    ))
    nbformat.write(nb, str(source))
    args = ["notebook", str(source), "--out", str(tmp_path / "executed.ipynb"), "--cwd", str(REPO)]
    for name, value in notebook_parameters.items():
        args += ["-p", name, json.dumps(value)]  # JSON is YAML
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    nb = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "ITEMS_ID_COLUMN = 'article_id'" in injected.source

    def pngs(marker: str) -> int:
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        return sum("image/png" in o.get("data", {}) for o in cell.outputs)

    assert pngs("read_metrics") == 1  # learning curves (loss and validation)
    assert pngs("np.cumsum(counts)") == 1  # popularity curve
    assert pngs("plot.bar") == 1  # head / tail bars and the finer buckets
    assert pngs("image_index") == 2  # one thumbnail figure per example session
    text = json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.outputs])
    assert "results.csv" in text and "test_recall@20" in text  # the experiment's table is shown

    buckets = pd.read_csv(out / "buckets.csv", index_col=["run", "bucket"])
    runs = ["gru4rec", "prnn", "pop"]
    assert buckets.index.tolist() == [(r, b) for r in runs for b in ["head", "tail", "all"]]
    for run in runs:
        rows = buckets.loc[run]
        assert rows.loc["head", "events"] > 0 and rows.loc["tail", "events"] > 0
        assert rows.loc["head", "events"] + rows.loc["tail", "events"] == rows.loc["all", "events"]
        assert rows.loc["head", "train_share"] > 0.2  # the head's items cover more than their share
    overall = pd.read_csv(out / "overall.csv", index_col=0)
    np.testing.assert_allclose(overall.loc[runs, "recall@20"], buckets.xs("all", level="bucket")["recall@20"])
    assert overall.loc["gru4rec", "recall@20"] > overall.loc["pop", "recall@20"]  # it learned something


def test_committed_notebook_is_clean():
    """Stored without outputs (kept out of git); one `parameters` cell for papermill-style overrides."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


def test_notebook_command_refuses_unknown_parameters_and_reports_failed_cells(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("assert X == 1, 'X is ' + repr(X)")]
    source = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(source))
    for extra, says in ((["-p", "Y", "2"], "unknown notebook parameter 'Y' (parameters: X)"),
                        (["-p", "X", "2"], "a cell failed (AssertionError: X is 2)")):
        with pytest.raises(SystemExit) as exit_info:
            main(["notebook", str(source), "--out", str(tmp_path / "out.ipynb"), *extra])
        assert exit_info.value.code != 0
        assert says in capsys.readouterr().err
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)  # written, error included, for reading
    assert any(o.get("ename") == "AssertionError" for o in executed.cells[-1].outputs)
