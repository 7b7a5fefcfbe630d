"""`properties`: tabular item properties (price, category, brand, ...) as one concatenated vector."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from sessrec.encoders.base import FeatureEncoder
from sessrec.features.catalogue import Catalogue
from sessrec.features.store import PropertyFeatures, load_properties

NumericMode = Literal["buckets", "standardize"]


Reference = tuple[np.ndarray, np.ndarray]  # (values, present) whose statistics define the codes


def quantile_buckets(
    values: np.ndarray, present: np.ndarray, n_buckets: int, reference: Reference | None = None
) -> np.ndarray:
    """Codes 1..n_buckets by quantile of the present values (of `reference`, when given: the bound
    catalogue's, for items outside it), 0 where absent: (N,) int64.

    Quantile edges do not change under monotone transforms, so log-price buckets are price buckets.
    """
    ref_values, ref_present = reference if reference is not None else (values, present)
    codes = np.zeros(len(values), dtype=np.int64)
    if ref_present.any() and present.any():
        cuts = np.linspace(0.0, 1.0, n_buckets + 1)[1:-1]
        edges = np.unique(np.quantile(ref_values[ref_present], cuts))  # (<= n_buckets - 1,)
        codes[present] = np.searchsorted(edges, values[present], side="right") + 1
    return codes


def standardize(
    values: np.ndarray, present: np.ndarray, log: bool, reference: Reference | None = None
) -> np.ndarray:
    """(signed log1p of) values standardised over the present ones (of `reference`, when given: the
    bound catalogue's, for items outside it); 0 (the mean) where absent."""
    def transform(v: np.ndarray) -> np.ndarray:
        return np.sign(v) * np.log1p(np.abs(v)) if log else v.astype(np.float64)

    ref_values, ref_present = reference if reference is not None else (values, present)
    if not ref_present.any():
        return np.zeros(len(values), dtype=np.float32)
    ref = transform(ref_values)[ref_present]
    mean, std = ref.mean(), ref.std()
    z = (transform(values) - mean) / (std if std > 0 else 1.0)
    return np.where(present, z, 0.0).astype(np.float32)


class PropertyEncoder(FeatureEncoder):
    """Numeric columns (bucket embeddings or standardised values) + categorical embeddings, concatenated.

    Missing values (nulls, items absent from the file, categories unseen) use code 0, whose embedding
    is learned like any other; standardised numeric values are 0 (the mean) when missing.

    Args:
        path: a properties ``.parquet`` with an ``item_id`` column, relative to the data folder.
        numeric: numeric columns (e.g. ["price"]).
        categorical: categorical columns (e.g. ["category", "brand"]).
        numeric_mode: "buckets" (quantile buckets, an embedding of `numeric_dim` per column) or
            "standardize" (one value per column, signed log1p first when `log`).
        n_buckets: quantile buckets per numeric column.
        numeric_dim: bucket embedding size.
        categorical_dim: embedding size per categorical column.
        log: signed log1p before standardising (heavy-tailed prices); buckets ignore it.
        projection: size of a trainable linear projection of the concatenation; 0 keeps it.
    """

    name = "properties"

    def __init__(
        self,
        path: str,
        numeric: list[str] = [],  # noqa: B006 - jsonargparse needs a literal default
        categorical: list[str] = [],  # noqa: B006
        numeric_mode: NumericMode = "buckets",
        n_buckets: int = 10,
        numeric_dim: int = 8,
        categorical_dim: int = 16,
        log: bool = True,
        projection: int = 0,
    ) -> None:
        super().__init__()
        if not numeric and not categorical:
            raise ValueError("PropertyEncoder: give at least one of numeric or categorical columns")
        if n_buckets < 1 or numeric_dim <= 0 or categorical_dim <= 0 or projection < 0:
            raise ValueError("PropertyEncoder: n_buckets, numeric_dim, categorical_dim must be positive")
        self.path, self.numeric, self.categorical = path, list(numeric), list(categorical)
        self.numeric_mode, self.n_buckets, self.log = numeric_mode, n_buckets, log
        self.numeric_dim, self.categorical_dim, self.projection = numeric_dim, categorical_dim, projection
        self.numeric_embeddings = nn.ModuleList()
        self.categorical_embeddings = nn.ModuleList()
        self.proj: nn.Linear | None = None

    def build(self, catalogue: Catalogue) -> int:
        path = catalogue.resolve(self.path)
        feats = load_properties(path, catalogue.item_ids, self.numeric, self.categorical)
        self._reference = feats  # the statistics and codes items outside the catalogue are encoded with
        size = self._build_numeric(feats)
        self.register_buffer("categorical_codes", feats.categorical, persistent=False)  # (N, c)
        for card in feats.cardinalities:
            self.categorical_embeddings.append(nn.Embedding(card, self.categorical_dim))
        size += self.categorical_dim * len(feats.cardinalities)
        if self.projection:
            self.proj = nn.Linear(size, self.projection)
        return self.projection or size

    def extend(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        new = load_properties(catalogue.resolve(self.path), new_ids, self.numeric, self.categorical)
        ref, m = self._reference, len(new_ids)
        values, present = new.numeric.numpy(), new.numeric_present.numpy()  # (M, k)
        ref_values, ref_present = ref.numeric.numpy(), ref.numeric_present.numpy()  # (N, k)
        columns = range(values.shape[1])
        if self.numeric_mode == "buckets":
            codes = [quantile_buckets(values[:, j], present[:, j], self.n_buckets,
                                      (ref_values[:, j], ref_present[:, j])) for j in columns]
            self.numeric_codes = torch.cat([self.numeric_codes, _stack(codes, np.int64, m)])
        else:
            z = [standardize(values[:, j], present[:, j], self.log, (ref_values[:, j], ref_present[:, j]))
                 for j in columns]
            self.numeric_values = torch.cat([self.numeric_values, _stack(z, np.float32, m)])
        cats = []
        for j, (vocab, new_vocab) in enumerate(zip(ref.vocabularies, new.vocabularies)):
            code_of = {value: code + 1 for code, value in enumerate(vocab)}
            to_trained = np.array([0] + [code_of.get(v, 0) for v in new_vocab], dtype=np.int64)  # 0: unseen
            cats.append(to_trained[new.categorical[:, j].numpy()])
        self.categorical_codes = torch.cat([self.categorical_codes, _stack(cats, np.int64, m)])
        return new.mask

    def _build_numeric(self, feats: PropertyFeatures) -> int:
        values, present = feats.numeric.numpy(), feats.numeric_present.numpy()  # (N, k), (N, k)
        columns = range(values.shape[1])
        if self.numeric_mode == "buckets":
            codes = [quantile_buckets(values[:, j], present[:, j], self.n_buckets) for j in columns]
            self.register_buffer("numeric_codes", _stack(codes, np.int64, len(values)), persistent=False)
            for _ in columns:
                self.numeric_embeddings.append(nn.Embedding(self.n_buckets + 1, self.numeric_dim))
            return self.numeric_dim * len(columns)
        z = [standardize(values[:, j], present[:, j], self.log) for j in columns]
        self.register_buffer("numeric_values", _stack(z, np.float32, len(values)), persistent=False)
        return len(columns)

    def forward(self, items: Tensor) -> Tensor:
        """items (B,) -> (B, output_size)."""
        self.check_bound()
        parts: list[Tensor] = []
        if self.numeric_mode == "buckets":
            codes = self.numeric_codes[items]  # (B, k)
            parts += [emb(codes[:, j]) for j, emb in enumerate(self.numeric_embeddings)]  # [(B, Dn)]
        elif self.numeric:
            parts.append(self.numeric_values[items])  # (B, k)
        cats = self.categorical_codes[items]  # (B, c)
        parts += [emb(cats[:, j]) for j, emb in enumerate(self.categorical_embeddings)]  # [(B, Dc)]
        x = torch.cat(parts, dim=1)  # (B, S)
        return self.proj(x) if self.proj is not None else x  # (B, P)


def _stack(columns: list[np.ndarray], dtype: type, n: int) -> Tensor:
    """Columns (N,) each -> (N, k) tensor; (N, 0) when there are none."""
    if not columns:
        return torch.from_numpy(np.zeros((n, 0), dtype=dtype))
    return torch.from_numpy(np.stack(columns, axis=1).astype(dtype))
