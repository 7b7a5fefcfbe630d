import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sessrec.commands import generate as generate_command
from sessrec.data import synthetic
from sessrec.data.synthetic import FILES, SyntheticConfig, generate, generate_to, write
from sessrec.errors import ConfigError

SMALL = SyntheticConfig(n_items=600, n_topics=20, n_sessions=3000, vocab_size=400, n_brands=40, seed=7)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a, b = write(generate(SMALL), tmp_path / "a"), write(generate(SMALL), tmp_path / "b")
    assert sorted(p.name for p in a.iterdir()) == sorted(FILES)
    for name in ("events.tsv", "image.npy", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(a / "items.parquet"), pd.read_parquet(b / "items.parquet"))
    ta, tb = sp.load_npz(a / "text.npz"), sp.load_npz(b / "text.npz")
    assert (ta != tb).nnz == 0
    other = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}))
    assert not other.events["ItemId"].equals(generate(SMALL).events["ItemId"])


def test_events_format(tmp_path: Path, small) -> None:
    out = write(small, tmp_path / "syn")
    events = pd.read_csv(out / "events.tsv", sep="\t")
    assert list(events.columns) == ["SessionId", "ItemId", "Time"]
    assert all(np.issubdtype(events[c].dtype, np.integer) for c in events.columns)
    assert events["ItemId"].between(1, SMALL.n_items).all()
    assert events["SessionId"].nunique() == SMALL.n_sessions
    assert (events.groupby("SessionId").size() >= 2).all()
    assert events["SessionId"].is_monotonic_increasing
    assert (events.groupby("SessionId")["Time"].diff().dropna() >= 0).all()
    assert (events.groupby("SessionId")["ItemId"].diff().dropna() != 0).all()  # no consecutive repeats
    starts = events.groupby("SessionId")["Time"].min()
    assert starts.is_monotonic_increasing  # session ids follow the time of the first event
    span_days = (events["Time"].max() - events["Time"].min()) / 86400
    assert SMALL.days - 1 < span_days < SMALL.days + 1


def test_feature_shapes_and_alignment(tmp_path: Path, small) -> None:
    out = write(small, tmp_path / "syn")
    items = pd.read_parquet(out / "items.parquet")
    image, text = np.load(out / "image.npy"), sp.load_npz(out / "text.npz").tocsr()
    n = SMALL.n_items
    columns = ["item_id", "topic", "subtopic", "release_time", "price", "category", "brand", "text"]
    assert list(items.columns) == columns
    assert (items["item_id"].to_numpy() == np.arange(1, n + 1)).all()
    assert image.shape == (n, SMALL.image_dim) and image.dtype == np.float32
    assert text.shape == (n, SMALL.vocab_size) and text.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sp.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert (items["price"] > 0).all()
    assert items["category"].nunique() == SMALL.n_categories
    for row in (0, 17, n - 1):  # the raw text names exactly the CSR row's columns
        words = {f"w{j}" for j in text[row].indices}
        assert set(items["text"].iloc[row].split()) == words


def test_text_is_sparse(small) -> None:
    per_item = np.diff(small.text.indptr)  # (N,)
    assert per_item.min() >= 1
    assert 3.0 < per_item.mean() < SMALL.tokens_per_item + 1
    assert small.text.nnz / np.prod(small.text.shape) < 0.02


def _mean_cosine(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(x[a] * x[b], axis=1)))


def _consecutive(data) -> tuple[np.ndarray, np.ndarray]:
    items = data.events["ItemId"].to_numpy() - 1
    same = data.events["SessionId"].to_numpy()[1:] == data.events["SessionId"].to_numpy()[:-1]
    return items[:-1][same], items[1:][same]


def test_topic_signal_is_real(small) -> None:
    prev, nxt = _consecutive(small)
    rng = np.random.default_rng(0)
    ra, rb = rng.integers(SMALL.n_items, size=(2, 20000))
    image = small.image
    consecutive, random = _mean_cosine(image, prev, nxt), _mean_cosine(image, ra, rb)
    assert consecutive > 4 * random and consecutive > random + 0.3, (consecutive, random)  # ~0.64 vs ~0.05
    text = small.text.toarray()
    assert _mean_cosine(text, prev, nxt) > 4 * _mean_cosine(text, ra, rb)  # ~0.23 vs ~0.02
    topic, sub = small.items["topic"].to_numpy(), small.items["subtopic"].to_numpy()
    # topic-scoped successors: only topic drift (p_drift) leaves the topic; random pairs: 1 / n_topics = 0.05
    assert np.mean(topic[prev] == topic[nxt]) > 0.9  # ~0.97
    # ~0.62: p_subtopic = 0.4 of the steps, plus successors and topic draws landing there; random: 1 / 60
    assert 0.5 < np.mean(sub[prev] == sub[nxt]) < 0.75


def test_successor_scope_all_leaves_the_topic() -> None:
    data = generate(SyntheticConfig(**{**SMALL.__dict__, "successor_scope": "all"}))
    prev, nxt = _consecutive(data)
    topic = data.items["topic"].to_numpy()
    assert 0.5 < np.mean(topic[prev] == topic[nxt]) < 0.75  # ~0.62: successors (p_id = 0.3) go anywhere


def test_subtopics_are_small_clusters_in_feature_space(small) -> None:
    topic, sub = small.items["topic"].to_numpy(), small.items["subtopic"].to_numpy()
    sizes = np.bincount(sub)
    assert sizes.min() >= SMALL.subtopic_size - 1 and sizes.max() <= SMALL.subtopic_size + 1  # 600 / 20 / 10
    assert (topic[np.argsort(sub, kind="stable")] == np.repeat(np.arange(SMALL.n_topics), 3 * 10)).all()
    rng = np.random.default_rng(1)
    a, b = rng.integers(SMALL.n_items, size=(2, 200_000))
    a, b = a[a != b], b[a != b]
    same_sub, same_topic = sub[a] == sub[b], (topic[a] == topic[b]) & (sub[a] != sub[b])
    other = topic[a] != topic[b]
    text = small.text.toarray()
    for x, margin in ((small.image, 0.2), (text, 0.1)):  # image ~0.80 / 0.41 / 0.02, text ~0.32 / 0.11 / 0.01
        cos = np.sum(x[a] * x[b], axis=1)
        in_sub, in_topic, apart = cos[same_sub].mean(), cos[same_topic].mean(), cos[other].mean()
        assert in_sub > in_topic + margin and in_topic > apart, (in_sub, in_topic, apart)
    # the nearest image neighbour of most items is in their sub-topic
    img = small.image
    sim = img @ img.T
    np.fill_diagonal(sim, -np.inf)
    assert np.mean(sub[sim.argmax(axis=1)] == sub) > 0.8  # 1.0 at image_noise 0.5
    # brands and prices follow the sub-topic
    brand = small.items["brand"].to_numpy()
    same_brand = brand[a] == brand[b]
    assert same_brand[same_sub].mean() > 0.5 > 2 * same_brand[other].mean()  # ~0.67 vs ~0.02
    price = np.log(small.items["price"].to_numpy())
    gap = np.abs(price[a] - price[b])
    assert gap[same_sub].mean() < 0.5 * gap[other].mean()  # ~0.17 vs ~1.1


def test_new_items_appear_only_after_release(small) -> None:
    items = small.items
    release = items["release_time"].to_numpy()
    new = release > 0
    assert 0.1 < new.mean() < 0.25  # new_items = 0.2 of the non-best-sellers (2/3 of them here)
    events = small.events
    start = events.groupby("SessionId")["Time"].transform("min").to_numpy()
    assert (release[events["ItemId"].to_numpy() - 1] <= start).all()
    # the most popular item of every sub-topic is available from the start
    counts = np.bincount(events["ItemId"].to_numpy() - 1, minlength=SMALL.n_items)
    best = pd.Series(counts).groupby(items["subtopic"]).idxmax().to_numpy()
    assert np.mean(~new[best]) > 0.95
    # late releases have fewer events: the ones released in the last third, vs items there from the start
    late = release > release[new].min() + 2 / 3 * (release.max() - release[new].min())
    assert counts[late].mean() < 0.5 * counts[~new].mean()


def test_popularity_has_head_and_tail(small) -> None:
    counts = np.sort(np.bincount(small.events["ItemId"], minlength=SMALL.n_items + 1)[1:])[::-1]
    top_share = counts[: SMALL.n_items // 20].sum() / counts.sum()  # top 5% of the items
    assert 0.15 < top_share < 0.8
    assert np.mean(counts < 5) < 0.3  # most items survive the reference's >= 5 events filter


def test_invalid_config_names_the_option() -> None:
    with pytest.raises(ConfigError, match="p_id"):
        generate(SyntheticConfig(p_id=1.5))
    with pytest.raises(ConfigError, match="p_subtopic"):
        generate(SyntheticConfig(p_id=0.7, p_subtopic=0.4))
    with pytest.raises(ConfigError, match="successor_scope"):
        generate(SyntheticConfig(successor_scope="session"))
    with pytest.raises(ConfigError, match="n_items"):
        generate(SyntheticConfig(n_items=10, n_topics=30))


@pytest.mark.parametrize("option, value", [("subtopic-size", "0"), ("subtopic-size", "1"), ("n-topics", "0"),
                                           ("seed", "-1")])
def test_command_refuses_bad_options_before_any_work(tmp_path: Path, option: str, value: str) -> None:
    """A zero divisor (ZeroDivisionError) or a negative seed (numpy's ValueError) got no further than here."""
    parser = argparse.ArgumentParser()
    generate_command.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "syn"), f"--{option}", value])
    name = option.replace("-", "_")
    with pytest.raises(ConfigError, match=rf"^synthetic data: {name} must be .*, got {value}$"):
        generate_command.run(args)
    assert not (tmp_path / "syn").exists()


def test_command_writes_folder(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    generate_command.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "syn"), "--n-items", "300", "--n-topics", "6",
                              "--n-sessions", "500", "--seed", "3"])
    assert generate_command.run(args) == 0
    assert "500 sessions" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "syn").iterdir()) == sorted(FILES)


def test_default_size(record_property) -> None:
    start = time.perf_counter()
    data = generate()
    record_property("generate_default_seconds", round(time.perf_counter() - start, 3))  # ~0.1 s here
    assert 90_000 < len(data.events) < 110_000
    assert data.meta["sessions"] == 20_000 and data.image.shape == (3000, 64)


def test_blocks_stream_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "SESSION_BLOCK", 700)  # 3,000 sessions: 5 blocks, each its own seed
    data = generate(SMALL)
    whole = write(data, tmp_path / "whole")
    meta = generate_to(tmp_path / "streamed", SMALL)
    again = generate_to(tmp_path / "again", SMALL)
    assert meta == again == data.meta and meta["sessions"] == 3000 == data.events["SessionId"].nunique()
    for name in FILES:
        assert (whole / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes(), name
        assert (whole / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    starts = data.events.groupby("SessionId")["Time"].min()
    assert starts.is_monotonic_increasing and starts.index.tolist() == list(range(1, 3001))
    monkeypatch.setattr(synthetic, "SESSION_BLOCK", 100_000)  # one block: the other draws
    assert not generate(SMALL).events.equals(data.events)


def test_paper_preset_parses() -> None:
    parser = argparse.ArgumentParser()
    generate_command.add_arguments(parser)
    args = parser.parse_args(["--preset", "paper-video", "--n-sessions", "1000"])
    config = generate_command.config_of(args)
    assert (config.n_items, config.n_sessions, config.vocab_size) == (712_824, 1000, 1_100_000)
    config.validate()
    default = generate_command.config_of(parser.parse_args([]))
    assert default == SyntheticConfig()
