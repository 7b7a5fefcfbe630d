"""Write MovieLens item features (TF-IDF text over title + tags, genre/year properties) for p-RNN.

    python benchmarks/movielens_features.py ../shared/data/movielens-latest-small/ml-latest-small \
        data/movielens/features

writes data/movielens/features/{text.npz, text.ids.txt, properties.parquet}. With
``--diginetica-categories ../shared/data/diginetica/product-categories.csv --diginetica-out
data/diginetica-sample/features/properties.parquet`` it also writes the Diginetica category properties.
"""

from __future__ import annotations

import argparse

import pandas as pd
import scipy.sparse as sp

from sessrec.features.movielens import write_diginetica_categories, write_movielens_features


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ml_dir", help="folder with movies.csv and tags.csv")
    parser.add_argument("out_dir", help="feature folder to write")
    parser.add_argument("--min-df", type=int, default=2)
    parser.add_argument(
        "--diginetica-categories", default=None, help="product-categories.csv (itemId;categoryId)"
    )
    parser.add_argument("--diginetica-out", default="data/diginetica-sample/features/properties.parquet")
    args = parser.parse_args()
    paths = write_movielens_features(args.ml_dir, args.out_dir, min_df=args.min_df)
    text = sp.load_npz(paths["text"])
    props = pd.read_parquet(paths["properties"])
    print(f"{paths['text']}: {text.shape[0]:,} movies x {text.shape[1]:,} terms, {text.nnz:,} non-zeros")
    print(
        f"{paths['properties']}: {len(props):,} movies, {props['genre'].nunique():,} genres, "
        f"year present for {props['year'].notna().sum():,}"
    )
    if args.diginetica_categories:
        out = write_diginetica_categories(args.diginetica_categories, args.diginetica_out)
        cats = pd.read_parquet(out)
        print(f"{out}: {len(cats):,} items, {cats['category'].nunique():,} categories")


if __name__ == "__main__":
    main()
