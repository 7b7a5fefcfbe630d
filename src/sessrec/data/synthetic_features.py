"""Item features of the bundled synthetic data set (the generative story: `sessrec.data.synthetic`).

image vectors around sub-topic centroids, TF-IDF text from sub-topic / topic / generic words, and the
items table (price, category, brand, latent topic and release time), all drawn from one generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from sessrec.data.synthetic import SyntheticConfig, _Catalogue

BASE_TIME = 1_704_067_200  # 2024-01-01 00:00:00 UTC, the first possible session start
SUBTOPIC_WORDS = 3  # words specific to each sub-topic


def _image(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator) -> np.ndarray:
    t, k, d = cfg.n_topics, cfg.subtopics_per_topic, cfg.image_dim
    g = rng.standard_normal((t, d))  # (T, D)
    centroid = g + 0.5 * (np.roll(g, 1, axis=0) + np.roll(g, -1, axis=0))  # ring neighbours correlate
    centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
    sub = np.repeat(centroid, k, axis=0) + cfg.subtopic_spread * rng.standard_normal((t * k, d)) / np.sqrt(d)
    sub /= np.linalg.norm(sub, axis=1, keepdims=True)  # (T*K, D) sub-topic centroids
    noise = rng.standard_normal((len(cat.topic), d)) / np.sqrt(d)  # (N, D)
    image = sub[cat.subtopic] + cfg.image_noise * noise
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    return image.astype(np.float32)


def _text(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator) -> tuple[sp.csr_matrix, list[str]]:
    n, v = len(cat.topic), cfg.vocab_size
    n_generic = max(10, v // 10)
    n_sub = SUBTOPIC_WORDS * cfg.n_topics * cfg.subtopics_per_topic  # sub-topic words after the generic
    block = (v - n_generic - n_sub) // cfg.n_topics  # topic-specific words per topic
    n_tok = 1 + rng.poisson(cfg.tokens_per_item - 1.0, size=n)  # (N,)
    owner = np.repeat(np.arange(n), n_tok)  # (M,) item of each drawn token
    kind = rng.random(len(owner))  # < 0.2 generic, < 0.6 sub-topic, else topic
    generic_word = np.searchsorted(_zipf_cdf(n_generic, 1.0), rng.random(len(owner)), side="right")
    sub_word = n_generic + cat.subtopic[owner] * SUBTOPIC_WORDS + rng.integers(
        SUBTOPIC_WORDS, size=len(owner)
    )
    topic_word = n_generic + n_sub + cat.topic[owner] * block + np.searchsorted(
        _zipf_cdf(block, 1.0), rng.random(len(owner)), side="right"
    )
    word = np.where(kind < 0.2, generic_word, np.where(kind < 0.6, sub_word, topic_word))
    word = rng.permutation(v)[word]  # (M,) shuffled word ids
    pairs = np.unique(owner * v + word)  # distinct (item, word), sorted by item then word
    rows, cols = pairs // v, pairs % v
    df = np.bincount(cols, minlength=v)  # (V,) items containing each word
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0  # smooth idf, as scikit-learn
    values = idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=n))  # (N,)
    values = (values / norms[rows]).astype(np.float32)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(n, v), dtype=np.float32)
    splits = np.searchsorted(rows, np.arange(1, n))
    text = [" ".join(f"w{c}" for c in chunk) for chunk in np.split(cols, splits)]
    return matrix, text


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent  # (n,)
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def _properties(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator) -> pd.DataFrame:
    n, t, s = len(cat.topic), cfg.n_topics, cfg.n_topics * cfg.subtopics_per_topic
    mu = rng.normal(3.0, 0.8, size=t)[np.arange(s) // cfg.subtopics_per_topic]  # (S,) per topic
    mu += 0.3 * rng.standard_normal(s)  # (S,) mean log price per sub-topic
    price = np.round(np.exp(mu[cat.subtopic] + 0.15 * rng.standard_normal(n)), 2)
    category = cat.topic * cfg.n_categories // t
    own = rng.integers(cfg.n_brands, size=(t, 3))  # (T, 3) each topic's own brands
    sub_brand = own[np.arange(s) // cfg.subtopics_per_topic, rng.integers(3, size=s)]  # (S,)
    brand = np.where(rng.random(n) < 0.8, sub_brand[cat.subtopic], rng.integers(cfg.n_brands, size=n))
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "topic": cat.topic.astype(np.int32),
            "subtopic": cat.subtopic.astype(np.int32),
            "release_time": np.where(cat.release > 0, BASE_TIME + np.floor(cat.release), 0).astype(np.int64),
            "price": price,
            "category": [f"cat{c:02d}" for c in category],
            "brand": [f"brand{b:03d}" for b in brand],
        }
    )


def item_features(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator
                  ) -> tuple[np.ndarray, sp.csr_matrix, pd.DataFrame]:
    """(image (N, D), TF-IDF text (N, V), the items table with its raw text), drawn in this order."""
    image = _image(cfg, cat, rng)
    text, raw_text = _text(cfg, cat, rng)
    items = _properties(cfg, cat, rng)
    items["text"] = raw_text
    return image, text, items
