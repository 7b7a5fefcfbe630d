"""Bundled synthetic data set: sessions driven by latent topics, items with topic-derived features.

Generative story (deterministic for a given `SyntheticConfig`, numpy `Generator` seeded once):

- Every item belongs to one of `n_topics` topics (balanced sizes). Topics sit on a ring: topic t is
  related to t-1 and t+1 (their feature centroids are correlated, they share a coarse `category`).
- Popularity: a topic weight (Dirichlet) times a Zipf weight `rank ** -zipf_exponent` of the item's
  random rank within its topic, which gives every topic a head and a long tail.
- A session starts at an item drawn by global popularity; its topic becomes the session topic. Each next
  item is, with probability `p_id`, one of the current item's `n_successors` fixed "successors" (drawn
  once per item from all items, by popularity ** 0.5): a pure ID signal that features cannot explain.
  Otherwise the session topic drifts to a ring neighbour with probability `p_drift`, and the next item
  is drawn from the session topic by popularity ** `topic_flatten` (flatter than the start
  distribution): a signal that features explain and that matters most for tail items, which have too
  few events to learn an ID embedding. Consecutive repeats are redrawn.
- Session lengths are 1 + Geometric(1 / (mean_session_length - 1)) (>= 2); sessions start uniformly in
  `days` days, consecutive events are 1 + Exponential(60 s) apart.

Item features, all derived from the topic plus noise:
- image: (N, image_dim) float32, L2-normalised `centroid[topic] + image_noise * z / sqrt(D)`;
- text: about `tokens_per_item` distinct words out of `vocab_size` (mostly words of the item's topic,
  some generic words), as a CSR matrix with L2-normalised TF-IDF weights (column j is word `wj`) and as
  raw space-separated text;
- price: log-normal around a per-topic mean; `category`: a coarse group of neighbouring topics;
  `brand`: one of the topic's own brands with probability 0.7, otherwise any brand.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sessrec.errors import ConfigError
from sessrec.io import atomic_dir

BASE_TIME = 1_704_067_200  # 2024-01-01 00:00:00 UTC, the first possible session start
FILES = ("events.tsv", "items.parquet", "image.npy", "text.npz", "meta.json")


@dataclass(frozen=True)
class SyntheticConfig:
    """Generation parameters; the defaults give ~100k events in ~1 s, a fast demo on a 2-core CPU."""

    n_items: int = 3000
    n_topics: int = 30
    n_sessions: int = 20000
    mean_session_length: float = 5.0
    days: int = 30
    seed: int = 0
    image_dim: int = 64
    vocab_size: int = 2000
    tokens_per_item: float = 5.0
    n_categories: int = 6
    n_brands: int = 150
    p_id: float = 0.5
    p_drift: float = 0.05
    n_successors: int = 3
    zipf_exponent: float = 1.0
    topic_flatten: float = 0.5
    image_noise: float = 1.0

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid option."""
        checks = [
            (self.n_topics >= 1, "n_topics must be >= 1"),
            (self.n_items >= 2 * self.n_topics, "n_items must be >= 2 * n_topics"),
            (self.n_sessions >= 1, "n_sessions must be >= 1"),
            (self.mean_session_length > 2.0, "mean_session_length must be > 2"),
            (self.days >= 1, "days must be >= 1"),
            (self.image_dim >= 1, "image_dim must be >= 1"),
            (self.vocab_size >= 3 * self.n_topics + 10, "vocab_size must be >= 3 * n_topics + 10"),
            (self.tokens_per_item >= 1.0, "tokens_per_item must be >= 1"),
            (1 <= self.n_categories <= self.n_topics, "n_categories must be in 1..n_topics"),
            (self.n_brands >= 1, "n_brands must be >= 1"),
            (0.0 <= self.p_id <= 1.0, "p_id must be in [0, 1]"),
            (0.0 <= self.p_drift <= 1.0, "p_drift must be in [0, 1]"),
            (self.n_successors >= 1, "n_successors must be >= 1"),
            (self.zipf_exponent >= 0.0, "zipf_exponent must be >= 0"),
            (self.topic_flatten >= 0.0, "topic_flatten must be >= 0"),
            (self.image_noise >= 0.0, "image_noise must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synthetic data: {message}")


@dataclass
class SyntheticData:
    """A generated data set; item rows (items, image, text) are in item_id order 1..N."""

    events: pd.DataFrame  # SessionId int64, ItemId int64, Time int64 (seconds)
    items: pd.DataFrame  # item_id, topic, price, category, brand, text
    image: np.ndarray  # (N, image_dim) float32, unit rows
    text: sp.csr_matrix  # (N, vocab_size) float32, unit rows
    meta: dict


@dataclass
class _Catalogue:
    topic: np.ndarray  # (N,) int64, topic of item index i (item_id = i + 1)
    pop: np.ndarray  # (N,) float64, start-item probabilities (sum 1)
    rank: np.ndarray  # (N,) int64, 1-based popularity rank within the topic
    by_topic: np.ndarray  # (N,) int64, item indices sorted by topic
    topic_cdf: np.ndarray  # (N,) float64, topic + within-topic cdf of pop ** topic_flatten (by_topic order)
    successors: np.ndarray  # (N, n_successors) int64


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent  # (n,)
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
    n, t = cfg.n_items, cfg.n_topics
    topic = rng.permutation(np.arange(n) % t)  # (N,) balanced topic sizes
    by_topic = np.lexsort((rng.random(n), topic))  # (N,) random order within each topic
    sizes = np.bincount(topic, minlength=t)  # (T,)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # (T,)
    rank = np.empty(n, dtype=np.int64)
    rank[by_topic] = np.arange(n) - starts[topic[by_topic]] + 1
    within = rank.astype(np.float64) ** -cfg.zipf_exponent  # (N,)
    topic_weight = rng.dirichlet(np.full(t, 2.0))  # (T,)
    pop = topic_weight[topic] * within / np.bincount(topic, weights=within, minlength=t)[topic]
    pop /= pop.sum()
    flat = (within ** cfg.topic_flatten)[by_topic]  # (N,) in by_topic order
    sorted_topic = topic[by_topic]
    cum = np.cumsum(flat)
    before = np.concatenate([[0.0], cum[:-1]])[starts][sorted_topic]  # sum of earlier topics
    total = np.bincount(sorted_topic, weights=flat, minlength=t)[sorted_topic]
    within_cdf = (cum - before) / total
    within_cdf[np.concatenate([starts[1:] - 1, [n - 1]])] = 1.0
    succ_p = np.sqrt(pop)
    succ_cdf = np.cumsum(succ_p) / succ_p.sum()
    succ = np.searchsorted(succ_cdf, rng.random((n, cfg.n_successors)), side="right")  # (N, K)
    succ = np.minimum(succ, n - 1)
    self_loop = succ == np.arange(n)[:, None]
    succ[self_loop] = (succ[self_loop] + 1) % n
    return _Catalogue(topic, pop, rank, by_topic, sorted_topic + within_cdf, succ)


def _draw_from_topic(cat: _Catalogue, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pos = np.searchsorted(cat.topic_cdf, topics + rng.random(len(topics)), side="right")  # (A,)
    return cat.by_topic[np.minimum(pos, len(cat.by_topic) - 1)]


def _successor_weights(k: int) -> np.ndarray:
    weights = 0.5 ** np.arange(k)  # (K,) the first successor is the most likely
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def _walk(cfg: SyntheticConfig, cat: _Catalogue, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Item indices of every session as a (S, max_len) matrix, -1 past each session's end."""
    s, n, t = len(lengths), cfg.n_items, cfg.n_topics
    start_cdf = np.cumsum(cat.pop)
    start_cdf[-1] = 1.0
    out = np.full((s, lengths.max()), -1, dtype=np.int64)  # (S, L)
    out[:, 0] = np.minimum(np.searchsorted(start_cdf, rng.random(s), side="right"), n - 1)
    topic = cat.topic[out[:, 0]]  # (S,) session topic
    succ_cdf = _successor_weights(cfg.n_successors)
    for step in range(1, out.shape[1]):
        act = np.flatnonzero(lengths > step)  # (A,) sessions still running
        cur = out[act, step - 1]
        by_id = rng.random(len(act)) < cfg.p_id
        drift = (rng.random(len(act)) < cfg.p_drift) & ~by_id
        topic[act[drift]] = (topic[act[drift]] + rng.choice([-1, 1], size=int(drift.sum()))) % t
        k = np.searchsorted(succ_cdf, rng.random(len(act)), side="right")
        nxt = np.where(by_id, cat.successors[cur, np.minimum(k, cfg.n_successors - 1)], -1)  # (A,)
        for _ in range(4):  # topic draws, redrawing consecutive repeats a few times
            redo = np.flatnonzero((nxt == -1) | (nxt == cur))
            if len(redo) == 0:
                break
            nxt[redo] = _draw_from_topic(cat, topic[act[redo]], rng)
        out[act, step] = nxt
    return out


def _events(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator) -> pd.DataFrame:
    p = 1.0 / (cfg.mean_session_length - 1.0)
    cap = max(4, int(10 * cfg.mean_session_length))
    lengths = np.minimum(1 + rng.geometric(p, size=cfg.n_sessions), cap)  # (S,) >= 2
    walk = _walk(cfg, cat, lengths, rng)  # (S, L)
    start = np.sort(rng.random(cfg.n_sessions) * cfg.days * 86400.0)  # (S,) ordered: id = time order
    session = np.repeat(np.arange(cfg.n_sessions), lengths)  # (E,)
    gaps = 1.0 + rng.exponential(60.0, size=len(session))  # (E,)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (S+1,)
    gaps[offsets[:-1]] = 0.0
    cum = np.cumsum(gaps)
    within = cum - cum[offsets[:-1]][session]  # (E,) seconds since the session start
    time = BASE_TIME + np.floor(start[session] + within).astype(np.int64)
    items = walk[walk >= 0]  # row-major: sessions in order, events in order
    return pd.DataFrame({"SessionId": session + 1, "ItemId": items + 1, "Time": time})


def _image(cfg: SyntheticConfig, topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal((cfg.n_topics, cfg.image_dim))  # (T, D)
    centroid = g + 0.5 * (np.roll(g, 1, axis=0) + np.roll(g, -1, axis=0))  # ring neighbours correlate
    centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
    noise = rng.standard_normal((len(topic), cfg.image_dim)) / np.sqrt(cfg.image_dim)  # (N, D)
    image = centroid[topic] + cfg.image_noise * noise
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    return image.astype(np.float32)


def _text(
    cfg: SyntheticConfig, topic: np.ndarray, rng: np.random.Generator
) -> tuple[sp.csr_matrix, list[str]]:
    n, v = len(topic), cfg.vocab_size
    n_generic = max(10, v // 10)
    block = (v - n_generic) // cfg.n_topics  # topic-specific words per topic
    n_tok = 1 + rng.poisson(cfg.tokens_per_item - 1.0, size=n)  # (N,)
    owner = np.repeat(np.arange(n), n_tok)  # (M,) item of each drawn token
    generic = rng.random(len(owner)) < 0.2
    topic_word = n_generic + topic[owner] * block + np.searchsorted(
        _zipf_cdf(block, 1.0), rng.random(len(owner)), side="right"
    )
    generic_word = np.searchsorted(_zipf_cdf(n_generic, 1.0), rng.random(len(owner)), side="right")
    word = rng.permutation(v)[np.where(generic, generic_word, topic_word)]  # (M,) shuffled word ids
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


def _properties(cfg: SyntheticConfig, topic: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    n = len(topic)
    mu = rng.normal(3.0, 0.8, size=cfg.n_topics)  # (T,) mean log price per topic
    price = np.round(np.exp(mu[topic] + 0.35 * rng.standard_normal(n)), 2)
    category = topic * cfg.n_categories // cfg.n_topics
    own = rng.integers(cfg.n_brands, size=(cfg.n_topics, 3))  # (T, 3) each topic's own brands
    brand = np.where(
        rng.random(n) < 0.7, own[topic, rng.integers(3, size=n)], rng.integers(cfg.n_brands, size=n)
    )
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "topic": topic.astype(np.int32),
            "price": price,
            "category": [f"cat{c:02d}" for c in category],
            "brand": [f"brand{b:03d}" for b in brand],
        }
    )


def generate(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate the data set described in the module docstring (deterministic given `config.seed`)."""
    cfg = config or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    events = _events(cfg, cat, rng)
    image = _image(cfg, cat.topic, rng)
    text, raw_text = _text(cfg, cat.topic, rng)
    items = _properties(cfg, cat.topic, rng)
    items["text"] = raw_text
    meta = {
        "generator": "sessrec.data.synthetic",
        "config": dataclasses.asdict(cfg),
        "events": len(events),
        "sessions": int(events["SessionId"].nunique()),
        "items": cfg.n_items,
        "items_with_events": int(events["ItemId"].nunique()),
        "time_range": [int(events["Time"].min()), int(events["Time"].max())],
        "files": {
            "events.tsv": "SessionId, ItemId, Time (seconds), tab-separated, with a header",
            "items.parquet": "item_id (1..N), topic, price, category, brand, text",
            "image.npy": "(N, image_dim) float32, L2-normalised, rows in items.parquet order",
            "text.npz": "(N, vocab_size) CSR float32 TF-IDF (column j = word wj), rows as items.parquet",
        },
    }
    return SyntheticData(events, items, image, text, meta)


def write(data: SyntheticData, out: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the files of `data` into the folder `out` atomically; return its path."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        data.events.to_csv(tmp / "events.tsv", sep="\t", index=False)
        data.items.to_parquet(tmp / "items.parquet", index=False)
        np.save(tmp / "image.npy", data.image)
        sp.save_npz(tmp / "text.npz", data.text)
        (tmp / "meta.json").write_text(json.dumps(data.meta, indent=2) + "\n")
    return out
