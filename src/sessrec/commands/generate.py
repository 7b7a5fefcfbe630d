"""Generate the bundled synthetic data set (sessions + item image/text/price/category/brand features)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from sessrec.data.synthetic import SyntheticConfig, generate_to
from sessrec.errors import DataError
from sessrec.io import claim_output

# named configurations (`generate --preset NAME`; options given with it override its values)
PRESETS: dict[str, dict] = {
    # the scale of the p-RNN paper's VIDEO set (Hidasi et al., RecSys 2016): 712,824 items, ~17.4M
    # sessions, ~69M events (~3.96 a session), a sparse text vocabulary of 1.1M words; the period, topics
    # and brands are ours
    "paper-video": dict(
        n_items=712_824, n_sessions=17_400_000, mean_session_length=4.0, days=90, n_topics=300,
        n_categories=30, n_brands=15_000, vocab_size=1_100_000, tokens_per_item=12.0,
    ),
}

HELP = {
    "n_items": "number of items",
    "n_topics": "number of latent topics (drive both transitions and features)",
    "subtopic_size": "items per sub-topic (a product line inside a topic; drives transitions and features)",
    "n_sessions": "number of sessions",
    "mean_session_length": "mean events per session (lengths are >= 2)",
    "days": "days spanned by the session start times",
    "seed": "random seed (same seed and options give identical data)",
    "image_dim": "dimension of the dense 'image' vectors",
    "vocab_size": "size of the text vocabulary",
    "tokens_per_item": "mean number of words per item text",
    "n_categories": "number of coarse categories (groups of neighbouring topics)",
    "n_brands": "number of brands",
    "p_id": "probability that the next item is one of the current item's fixed successors (ID signal)",
    "p_subtopic": "probability that the next item is another item of the current item's sub-topic",
    "p_drift": "per-step probability that the session topic moves to a neighbouring topic",
    "n_successors": "fixed successors per item",
    "successor_scope": "where the successors come from: 'topic' (the item's topic) or 'all' (any item)",
    "zipf_exponent": "exponent of the Zipf popularity within a topic",
    "topic_flatten": "exponent applied to popularity for (sub-)topic transitions (< 1 is flatter)",
    "new_items": "share of the items (never a sub-topic's best seller) released during the period",
    "image_noise": "item noise relative to the sub-topic centroid in the image vectors",
    "subtopic_spread": "distance of the sub-topic centroids from their topic centroid in the image vectors",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named configuration; options given with it override its values (paper-video: the scale "
        "of the p-RNN paper's video set, 712,824 items, 17.4M sessions, ~69M events)",
    )
    for field in dataclasses.fields(SyntheticConfig):
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            help=f"{HELP[field.name]} (default: {field.default})",
        )


def config_of(args: argparse.Namespace) -> SyntheticConfig:
    """The SyntheticConfig of the command line: the defaults, then --preset, then the options given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)}
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    return SyntheticConfig(**{**preset, **{k: v for k, v in given.items() if v is not None}})


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    start = time.perf_counter()
    # before any work: refuses `--out .` (the working directory or a parent); locked throughout
    with claim_output(args.out, folder=True):
        if Path(args.out).exists() and not args.overwrite:
            raise DataError(f"{args.out}: output exists (pass --overwrite to replace it)")
        meta = generate_to(args.out, config, overwrite=args.overwrite)  # memory flat in n_sessions
    out = args.out
    print(
        f"{out}: {meta['events']:,} events, {meta['sessions']:,} sessions, {meta['items']:,} items "
        f"({meta['items_with_events']:,} with events) over {config.days} days "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
