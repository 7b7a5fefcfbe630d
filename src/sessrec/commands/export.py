"""Export a trained GRU4Rec / p-RNN checkpoint as a self-contained folder for serving."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sessrec.io import atomic_dir, claim_output

log = logging.getLogger("sessrec")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt_path", type=Path, required=True, help="checkpoint written by `fit`")
    parser.add_argument("--config", type=Path, default=None,
                        help="the run's config (default: config.yaml beside the checkpoint or one folder up)")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="prepared data folder (default: the config's data.data_dir)")
    parser.add_argument("--out", type=Path, required=True,
                        help="export folder to write (a previous export there is replaced; another non-empty "
                        "folder is refused)")


def run(args: argparse.Namespace) -> int:
    from sessrec.serving.artefact import check_replaceable, feature_files, find_config, from_checkpoint, write_export

    config = args.config if args.config is not None else find_config(args.ckpt_path)
    with claim_output(args.out, [args.ckpt_path, config, args.data_dir], folder=True) as out:
        check_replaceable(out)  # before any work, under the output's lock
        net, item_ids, spec, catalogue = from_checkpoint(args.ckpt_path, config, args.data_dir)
        inputs = [args.ckpt_path, config, catalogue.data_dir, *feature_files(spec, catalogue)]
        with claim_output(out, inputs, folder=True), atomic_dir(out) as tmp:  # data_dir known only now
            manifest = write_export(tmp, net, item_ids, spec, catalogue)
    n_files = len(manifest["files"]["features"])
    log.info("exported %s (%d items, %d feature files) to %s", spec["class_path"].rsplit(".", 1)[-1],
             manifest["n_items"], n_files, out)
    return 0
