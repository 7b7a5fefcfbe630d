"""Bundled synthetic data set: sessions over a topic / sub-topic catalogue, items with features from both.

Generative story (deterministic for a given `SyntheticConfig`, numpy `Generator` seeded once):

- Catalogue: every item belongs to one of `n_topics` topics (balanced sizes) and, within it, to one
  sub-topic of about `subtopic_size` items (a product line: variants of one product). Topics sit on a
  ring: topic t is related to t-1 and t+1 (correlated feature centroids, a shared coarse `category`).
- Popularity: topic weight (Dirichlet(2)) x sub-topic weight within the topic (Dirichlet(1)) x a Zipf
  weight `rank ** -zipf_exponent` of the item's random rank within its sub-topic: every sub-topic has a
  best seller (rank 1) and a tail of rarer variants.
- New items: a share `new_items` of the items that are not a sub-topic's best seller is released at a
  uniform time in the `days`; sessions starting earlier never show them. Late releases have few events
  before the test period, the cold-ish items that only features can place.
- A session starts at an item drawn by popularity; its topic becomes the session topic. Each next item is
  - with probability `p_id`, one of the current item's `n_successors` fixed "successors" (complements,
    "bought together"; drawn once per item by popularity ** 0.5 from the items of its topic, or of all
    topics with `successor_scope` "all", available from the start; the first is the most likely): an ID
    signal that features explain only up to the topic and that only items with many events can learn;
  - with probability `p_subtopic`, another item of the current item's sub-topic (an item-to-item
    transition between variants), drawn by popularity ** `topic_flatten`: a fine-grained signal the
    features explain, which an ID model must learn item by item;
  - otherwise an item of the session topic (drawn by popularity ** `topic_flatten`), after the session
    topic drifts to a ring neighbour with probability `p_drift`.
  Consecutive repeats and not-yet-released items are redrawn (last resort: the first successor).
- Session lengths are 1 + Geometric(1 / (mean_session_length - 1)) (>= 2); sessions start uniformly in
  `days` days, consecutive events are 1 + Exponential(60 s) apart. Sessions are drawn in blocks of
  SESSION_BLOCK (100,000): block b starts uniformly within its share b/B..(b+1)/B of the period, from its
  own generator seeded (seed, b) (block 0: the main one), so `generate_to` writes them one block at a
  time with flat memory, and the data depend on the seed only.

Item features, derived from the topic and the sub-topic plus noise:
- image: (N, image_dim) float32, L2-normalised `sub[s] + image_noise * z / sqrt(D)`, where the sub-topic
  centroid `sub[s]` = normalised `topic_centroid[t] + subtopic_spread * u_s` (u_s a random direction);
- text: about `tokens_per_item` distinct words out of `vocab_size`: words of the item's sub-topic (3 per
  sub-topic), of its topic, and generic words, as a CSR matrix with L2-normalised TF-IDF weights (column j
  is word `wj`) and as raw space-separated text;
- price: log-normal around a per-sub-topic mean (itself around a per-topic mean); `category`: a coarse
  group of neighbouring topics; `brand`: the sub-topic's brand (one of its topic's 3 brands) with
  probability 0.8, otherwise any brand.
items.parquet also lists the latent `topic`, `subtopic` and `release_time` (0 = available from the start).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

from sessrec.errors import ConfigError
from sessrec.data.synthetic_features import BASE_TIME, SUBTOPIC_WORDS, item_features
from sessrec.io import atomic_dir

FILES = {  # the files of a generated folder, described in its meta.json
    "events.tsv": "SessionId, ItemId, Time (seconds), tab-separated, with a header",
    "items.parquet": "item_id (1..N), topic, subtopic, release_time (0: from the start), price, category, "
    "brand, text",
    "image.npy": "(N, image_dim) float32, L2-normalised, rows in items.parquet order",
    "text.npz": "(N, vocab_size) CSR float32 TF-IDF (column j = word wj), rows as items.parquet",
    "meta.json": "this description, the configuration and counts",
}
SESSION_BLOCK = 100_000  # sessions drawn from one random stream (block 0: the main one, then seed+block)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticConfig:
    """Generation parameters; the defaults give ~100k events in ~1 s, a fast demo on a 2-core CPU."""

    n_items: int = 3000
    n_topics: int = 30
    subtopic_size: int = 10
    n_sessions: int = 20000
    mean_session_length: float = 5.0
    days: int = 30
    seed: int = 0
    image_dim: int = 64
    vocab_size: int = 2000
    tokens_per_item: float = 5.0
    n_categories: int = 6
    n_brands: int = 150
    p_id: float = 0.3
    p_subtopic: float = 0.4
    p_drift: float = 0.05
    n_successors: int = 3
    successor_scope: Literal["topic", "all"] = "topic"
    zipf_exponent: float = 1.0
    topic_flatten: float = 0.5
    new_items: float = 0.2
    image_noise: float = 0.5
    subtopic_spread: float = 1.0

    @property
    def subtopics_per_topic(self) -> int:
        return max(1, round(self.n_items / self.n_topics / self.subtopic_size))

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid option (with its value)."""
        for ok, message in self._checks():
            if not ok:
                raise ConfigError(f"synthetic data: {message}")

    def _checks(self) -> Iterator[tuple[bool, str]]:
        """(valid, message) per rule, lazily: a rule runs only when those before it held (the vocabulary
        size depends on n_topics and subtopic_size, which must be positive first)."""
        yield self.n_topics >= 1, f"n_topics must be >= 1, got {self.n_topics}"
        yield self.n_items >= 2 * self.n_topics, f"n_items must be >= 2 * n_topics, got {self.n_items}"
        yield self.subtopic_size >= 2, f"subtopic_size must be >= 2, got {self.subtopic_size}"
        yield self.n_sessions >= 1, f"n_sessions must be >= 1, got {self.n_sessions}"
        yield (self.mean_session_length > 2.0,
               f"mean_session_length must be > 2, got {self.mean_session_length}")
        yield self.days >= 1, f"days must be >= 1, got {self.days}"
        yield self.seed >= 0, f"seed must be >= 0, got {self.seed}"
        yield self.image_dim >= 1, f"image_dim must be >= 1, got {self.image_dim}"
        # generic words, then SUBTOPIC_WORDS per sub-topic and at least as many per topic
        n_words = SUBTOPIC_WORDS * self.n_topics * (self.subtopics_per_topic + 1)
        words = max(10, self.vocab_size // 10) + n_words
        yield (self.vocab_size >= words,
               f"vocab_size must be >= {words} (generic + topic + sub-topic words), got {self.vocab_size}")
        yield self.tokens_per_item >= 1.0, f"tokens_per_item must be >= 1, got {self.tokens_per_item}"
        yield (1 <= self.n_categories <= self.n_topics,
               f"n_categories must be in 1..n_topics, got {self.n_categories}")
        yield self.n_brands >= 1, f"n_brands must be >= 1, got {self.n_brands}"
        yield 0.0 <= self.p_id <= 1.0, f"p_id must be in [0, 1], got {self.p_id}"
        yield (0.0 <= self.p_subtopic <= 1.0 - self.p_id,
               f"p_subtopic must be in [0, 1 - p_id], got {self.p_subtopic}")
        yield 0.0 <= self.p_drift <= 1.0, f"p_drift must be in [0, 1], got {self.p_drift}"
        yield self.n_successors >= 1, f"n_successors must be >= 1, got {self.n_successors}"
        yield (self.successor_scope in ("topic", "all"),
               f"successor_scope must be 'topic' or 'all', got {self.successor_scope!r}")
        yield self.zipf_exponent >= 0.0, f"zipf_exponent must be >= 0, got {self.zipf_exponent}"
        yield self.topic_flatten >= 0.0, f"topic_flatten must be >= 0, got {self.topic_flatten}"
        yield 0.0 <= self.new_items < 1.0, f"new_items must be in [0, 1), got {self.new_items}"
        yield self.image_noise >= 0.0, f"image_noise must be >= 0, got {self.image_noise}"
        yield self.subtopic_spread >= 0.0, f"subtopic_spread must be >= 0, got {self.subtopic_spread}"


@dataclass
class SyntheticData:
    """A generated data set; item rows (items, image, text) are in item_id order 1..N."""

    events: pd.DataFrame  # SessionId int64, ItemId int64, Time int64 (seconds)
    items: pd.DataFrame  # item_id, topic, subtopic, release_time, price, category, brand, text
    image: np.ndarray  # (N, image_dim) float32, unit rows
    text: sp.csr_matrix  # (N, vocab_size) float32, unit rows
    meta: dict


@dataclass
class _Sampler:
    """Draws items of given groups with fixed weights: `order` sorts the items by group, `cdf` is the
    group id plus the within-group cdf (in `order`), so an item of group g is at searchsorted(g + u)."""

    order: np.ndarray  # (N,) int64
    cdf: np.ndarray  # (N,) float64

    @classmethod
    def build(cls, group: np.ndarray, weight: np.ndarray) -> _Sampler:
        order = np.argsort(group, kind="stable")  # (N,)
        g, w = group[order], weight[order]
        cum = np.cumsum(w)
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # (G,) start of every group
        before = np.repeat(np.r_[0.0, cum[first[1:] - 1]], np.diff(np.r_[first, len(g)]))
        total = np.repeat(np.add.reduceat(w, first), np.diff(np.r_[first, len(g)]))
        within = (cum - before) / total
        within[np.r_[first[1:] - 1, len(g) - 1]] = 1.0
        return cls(order, g + within)

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self.cdf, groups + rng.random(len(groups)), side="right")  # (A,)
        return self.order[np.minimum(pos, len(self.order) - 1)]


@dataclass
class _Catalogue:
    topic: np.ndarray  # (N,) int64, topic of item index i (item_id = i + 1)
    subtopic: np.ndarray  # (N,) int64, global sub-topic id (topics own consecutive ids)
    pop: np.ndarray  # (N,) float64, start-item probabilities (sum 1)
    release: np.ndarray  # (N,) float64, seconds after BASE_TIME from which the item can be shown
    by_topic: _Sampler  # pop ** topic_flatten within the topic
    by_subtopic: _Sampler  # pop ** topic_flatten within the sub-topic
    successors: np.ndarray  # (N, n_successors) int64, never new items


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
    n, t, k = cfg.n_items, cfg.n_topics, cfg.subtopics_per_topic
    topic = rng.permutation(np.arange(n) % t)  # (N,) balanced topic sizes
    order = np.lexsort((rng.random(n), topic))  # (N,) random order within each topic
    sizes = np.bincount(topic, minlength=t)  # (T,)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n) - np.r_[0, np.cumsum(sizes)[:-1]][topic[order]]  # (N,) place in the topic
    subtopic = topic * k + pos * k // sizes[topic]  # (N,) balanced sub-topics
    first = np.r_[True, subtopic[order][1:] != subtopic[order][:-1]]
    rank = np.empty(n, dtype=np.int64)  # (N,) 1-based rank within the sub-topic
    rank[order] = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0)) + 1
    within = rank.astype(np.float64) ** -cfg.zipf_exponent  # (N,)
    sub_weight = rng.dirichlet(np.ones(k), size=t).ravel()  # (T*K,) sub-topic share within its topic
    pop = rng.dirichlet(np.full(t, 2.0))[topic] * sub_weight[subtopic] * within
    pop /= np.bincount(subtopic, weights=within, minlength=t * k)[subtopic]
    pop /= pop.sum()
    new = (rank > 1) & (rng.random(n) < cfg.new_items)  # (N,) a best seller is never new
    release = np.where(new, rng.random(n) * cfg.days * 86400.0, 0.0)
    succ = _successors(cfg, topic, np.where(new, 0.0, np.sqrt(pop)), rng)  # (N, K)
    flat = pop**cfg.topic_flatten
    by_topic, by_subtopic = _Sampler.build(topic, flat), _Sampler.build(subtopic, flat)
    return _Catalogue(topic, subtopic, pop, release, by_topic, by_subtopic, succ)


def _successors(cfg: SyntheticConfig, topic: np.ndarray, weight: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
    """(N, K) fixed successors of every item, drawn by `weight` (zero for new items) in the item's topic
    (`successor_scope` "topic") or among all items ("all"); never the item itself, never a new item."""
    n, k = len(topic), cfg.n_successors
    if cfg.successor_scope == "topic":
        succ = _Sampler.build(topic, weight).draw(np.repeat(topic, k), rng).reshape(n, k)  # (N, K)
    else:
        cdf = np.cumsum(weight) / weight.sum()
        succ = np.minimum(np.searchsorted(cdf, rng.random((n, k)), side="right"), n - 1)  # (N, K)
    old = np.flatnonzero(weight > 0)  # (O,) the items available from the start
    bad = (succ == np.arange(n)[:, None]) | (weight[succ] == 0)  # (N, K) the item itself (or a new one)
    succ[bad] = old[(np.searchsorted(old, succ[bad]) + 1) % len(old)]  # the next old item instead
    bad = succ == np.arange(n)[:, None]
    succ[bad] = old[(np.searchsorted(old, succ[bad]) + 1) % len(old)]
    return succ


def _successor_weights(k: int) -> np.ndarray:
    weights = 0.5 ** np.arange(k)  # (K,) the first successor is the most likely
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf


def _walk(
    cfg: SyntheticConfig, cat: _Catalogue, lengths: np.ndarray, start: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Item indices of every session as a (S, max_len) matrix, -1 past each session's end."""
    s, n, t = len(lengths), cfg.n_items, cfg.n_topics
    start_cdf = np.cumsum(cat.pop)
    start_cdf[-1] = 1.0
    out = np.full((s, lengths.max()), -1, dtype=np.int64)  # (S, L)
    first = np.minimum(np.searchsorted(start_cdf, rng.random(s), side="right"), n - 1)  # (S,)
    for _ in range(4):  # redraw starts at items not released yet
        late = np.flatnonzero(cat.release[first] > start)
        first[late] = np.minimum(np.searchsorted(start_cdf, rng.random(len(late)), side="right"), n - 1)
    late = cat.release[first] > start
    first[late] = cat.successors[first[late], 0]
    out[:, 0] = first
    topic = cat.topic[first]  # (S,) session topic
    succ_cdf = _successor_weights(cfg.n_successors)
    for step in range(1, out.shape[1]):
        act = np.flatnonzero(lengths > step)  # (A,) sessions still running
        cur, now = out[act, step - 1], start[act]
        u = rng.random(len(act))
        by_id, by_topic = u < cfg.p_id, u >= cfg.p_id + cfg.p_subtopic  # the rest: by sub-topic
        drift = (rng.random(len(act)) < cfg.p_drift) & by_topic
        topic[act[drift]] = (topic[act[drift]] + rng.choice([-1, 1], size=int(drift.sum()))) % t
        k = np.searchsorted(succ_cdf, rng.random(len(act)), side="right")
        nxt = np.where(by_id, cat.successors[cur, np.minimum(k, cfg.n_successors - 1)], cur)  # (A,)
        for _ in range(6):  # draws, redrawing repeats and unreleased items a few times
            redo = np.flatnonzero((nxt == cur) | (cat.release[nxt] > now))
            if len(redo) == 0:
                break
            sub, top = redo[~by_topic[redo]], redo[by_topic[redo]]
            nxt[sub] = cat.by_subtopic.draw(cat.subtopic[cur[sub]], rng)
            nxt[top] = cat.by_topic.draw(topic[act[top]], rng)
        bad = (nxt == cur) | (cat.release[nxt] > now)
        nxt[bad] = cat.successors[cur[bad], 0]  # never new, never the item itself
        out[act, step] = nxt
    return out


def _session_events(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator, block: int
                    ) -> pd.DataFrame:
    """Events of the sessions of `block` (SESSION_BLOCK sessions each), drawn from `rng`; they start in the
    block's share of the period, so session ids follow start times across blocks too."""
    first = block * SESSION_BLOCK
    n = min(SESSION_BLOCK, cfg.n_sessions - first)
    lo, share = first / cfg.n_sessions, n / cfg.n_sessions  # (0, 1) with one block: the old draws
    p = 1.0 / (cfg.mean_session_length - 1.0)
    cap = max(4, int(10 * cfg.mean_session_length))
    lengths = np.minimum(1 + rng.geometric(p, size=n), cap)  # (S,) >= 2
    start = np.sort(lo * cfg.days * 86400.0 + rng.random(n) * cfg.days * 86400.0 * share)  # (S,) ordered
    walk = _walk(cfg, cat, lengths, start, rng)  # (S, L)
    session = np.repeat(np.arange(n), lengths)  # (E,)
    gaps = 1.0 + rng.exponential(60.0, size=len(session))  # (E,)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (S+1,)
    gaps[offsets[:-1]] = 0.0
    cum = np.cumsum(gaps)
    within = cum - cum[offsets[:-1]][session]  # (E,) seconds since the session start
    time = BASE_TIME + np.floor(start[session] + within).astype(np.int64)
    items = walk[walk >= 0]  # row-major: sessions in order, events in order
    return pd.DataFrame({"SessionId": session + first + 1, "ItemId": items + 1, "Time": time})


def _blocks(cfg: SyntheticConfig, cat: _Catalogue) -> Iterator[pd.DataFrame]:
    """The events of blocks 1.. (block 0 comes from the main generator), each from its own seed."""
    for block in range(1, -(-cfg.n_sessions // SESSION_BLOCK)):
        yield _session_events(cfg, cat, np.random.default_rng([cfg.seed, block]), block)


def _meta(cfg: SyntheticConfig, cat: _Catalogue, n_events: int, items_with_events: int, times: list[int]
          ) -> dict:
    return {
        "generator": "sessrec.data.synthetic",
        "config": dataclasses.asdict(cfg),
        "events": n_events,
        "sessions": cfg.n_sessions,  # every session has >= 2 events
        "items": cfg.n_items,
        "items_with_events": items_with_events,
        "subtopics": cfg.n_topics * cfg.subtopics_per_topic,
        "new_items": int((cat.release > 0).sum()),
        "time_range": times,
        "files": {name: what for name, what in FILES.items() if name != "meta.json"},
    }


def _draw(config: SyntheticConfig | None) -> tuple[SyntheticConfig, _Catalogue, tuple, Iterator[pd.DataFrame]]:
    """(config, catalogue, (image, text, items), the events block by block, drawn lazily)."""
    cfg = config or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    first = _session_events(cfg, cat, rng, 0)
    return cfg, cat, item_features(cfg, cat, rng), itertools.chain([first], _blocks(cfg, cat))


def generate(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate the data set described in the module docstring (deterministic given `config.seed`)."""
    cfg, cat, (image, text, items), blocks = _draw(config)
    events = pd.concat(blocks, ignore_index=True)
    times = [int(events["Time"].min()), int(events["Time"].max())]
    meta = _meta(cfg, cat, len(events), int(events["ItemId"].nunique()), times)
    return SyntheticData(events, items, image, text, meta)


def write(data: SyntheticData, out: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write the files of `data` into the folder `out` atomically; return its path."""
    features = (data.image, data.text, data.items)
    _write_folder(Path(out), overwrite, features, [data.events], data.meta)
    return Path(out)


def generate_to(out: str | os.PathLike, config: SyntheticConfig | None = None, overwrite: bool = True
                ) -> dict:
    """`write(generate(config), out)` with memory flat in the number of sessions: the events are drawn and
    appended block by block (same files); returns the meta."""
    cfg, cat, features, blocks = _draw(config)
    return _write_folder(Path(out), overwrite, features, blocks, _meta(cfg, cat, 0, 0, []))


def _write_folder(out: Path, overwrite: bool, features: tuple, blocks: Iterable[pd.DataFrame], meta: dict
                  ) -> dict:
    """Write the folder atomically, events.tsv one block at a time; `meta` with the counts filled in."""
    image, text, items = features
    with atomic_dir(out, overwrite=overwrite) as tmp, (tmp / "events.tsv").open("wb") as handle:
        items.to_parquet(tmp / "items.parquet", index=False)
        np.save(tmp / "image.npy", image)
        sp.save_npz(tmp / "text.npz", text)
        seen, n_events, times = np.zeros(len(items) + 1, dtype=bool), 0, [2**63 - 1, 0]
        for block in blocks:
            pl.from_pandas(block).write_csv(handle, separator="\t", include_header=n_events == 0)
            seen[block["ItemId"].to_numpy()] = True
            n_events += len(block)
            times = [min(times[0], int(block["Time"].min())), max(times[1], int(block["Time"].max()))]
            done = int(block["SessionId"].iloc[-1])
            if done == meta["sessions"] or done // 10**6 != (done - SESSION_BLOCK) // 10**6:  # every 1M
                log.info("generate: %d of %d sessions written", done, meta["sessions"])
        meta = {**meta, "events": n_events, "items_with_events": int(seen.sum()), "time_range": times}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
