"""A checkpoint is tied to the item map it was trained on: refused on data with other ids at the same count.

Weights are rows per item index; a data folder whose items.parquet holds the same number of other ids (or
the same ids in another order) passes every shape check but would score the wrong items.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sessrec.cli import main
from sessrec.errors import DataError
from sessrec.evaluation.analysis import load_run
from sessrec.training.checkpoints import ITEM_MAP_KEY, check_item_map, item_map, load_checkpoint


@pytest.fixture(scope="module")
def reordered(small: Path, tmp_path_factory) -> Path:
    """A copy of the prepared folder whose item map lists the same ids in reverse order (raw/ beside it)."""
    root = tmp_path_factory.mktemp("reordered")
    shutil.copytree(small / "raw", root / "raw")
    data = Path(shutil.copytree(small / "prepared", root / "prepared"))
    table = pq.read_table(data / "items.parquet")
    ids = table.column("item_id")
    pq.write_table(table.set_column(table.schema.get_field_index("item_id"), "item_id",
                                    pa.array(ids.to_pylist()[::-1], ids.type)), data / "items.parquet")
    return data


def test_item_map_is_order_sensitive_and_old_checkpoints_pass():
    assert item_map(["a", "b"])["digest"] != item_map(["b", "a"])["digest"]
    assert item_map(["a", "b"]) == item_map(["a", "b"]) and item_map(["a"])["n_items"] == 1
    check_item_map("old.ckpt", {"state_dict": {}}, item_map(["b", "a"]), "data")  # no map saved: not checked
    with pytest.raises(DataError, match="old.ckpt: trained on another item map"):
        check_item_map("old.ckpt", {ITEM_MAP_KEY: item_map(["a", "b"])}, item_map(["b", "a"]), "data")


@pytest.mark.parametrize("net", ["gru4rec", "prnn"])
def test_a_checkpoint_is_refused_on_another_item_map(trained, reordered, small, tmp_path, capsys, net):
    config, ckpt = trained[net]
    saved = load_checkpoint(ckpt)[ITEM_MAP_KEY]
    assert saved == item_map(pq.read_table(small / "prepared" / "items.parquet").column("item_id").to_pylist())
    for argv in (["test", "--config", str(config), "--ckpt_path", str(ckpt), "--data.data_dir", str(reordered)],
                 ["export", "--ckpt_path", str(ckpt), "--config", str(config), "--data_dir", str(reordered),
                  "--out", str(tmp_path / "export")]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "trained on another item map" in err and str(reordered) in err, err
    assert not (tmp_path / "export").exists()
    with pytest.raises(DataError, match="trained on another item map"):
        load_run(config, ckpt, data_dir=reordered)
    load_run(config, ckpt)  # the data it was trained on: loads
