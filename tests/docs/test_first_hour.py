"""docs/first-hour.md, run as written on a user's own CSV files.

The test writes a small, realistic `my-shop/` (a click log with string visit and product ids and ISO
date-times; a products table keyed by `sku` with missing titles, prices and brands), converted from
`sessrec generate` output, into a fresh working folder that also holds links to the repository's
`configs/`, `notebooks/` and `encoders/`. It writes the YAML files the page shows (a fenced block whose
preceding line names the file: "`my-shop/data.yaml`:"), then runs every `python -m sessrec ...` command of
the page's bash blocks, in order and unchanged, in-process (`sessrec.cli.main`, exit status 0 expected).
The only change is size: a `fit` that sets no epoch count (the validated ID-only run, up to 30 epochs)
gets `--trainer.max_epochs 3` appended; the p-RNN trains its 6 epochs (2 per subnet) as written.
Commands that are not sessrec's (`source .venv/bin/activate`, pip, make, jupyter) are not run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from sessrec.cli import main

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "first-hour.md"
EPOCHS = ["--trainer.max_epochs", "3"]  # appended to a `fit` that sets no epoch count: size only
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NAMED = re.compile(r"`([\w./-]+)`:\s*$")  # "`my-shop/data.yaml`:" on the line before a block
CATEGORIES = {"cat00": "shirt", "cat01": "shoe", "cat02": "mug", "cat03": "lamp", "cat04": "toy",
              "cat05": "book"}  # the generator's 6 categories


def _blocks() -> list[tuple[str, str, str | None]]:
    """(language, body, the file the preceding line names or None) for every fenced block of the page."""
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        named = NAMED.search(before)
        found.append((match.group(1), match.group(2), named.group(1) if named else None))
    return found


def _shell_commands(body: str) -> list[list[str]]:
    """The commands of a bash block: backslash continuations joined, quotes spanning lines kept."""
    commands, pending = [], ""
    for line in body.splitlines():
        pending += line + "\n"
        if pending.rstrip().endswith("\\"):
            continue
        try:
            tokens = shlex.split(pending.replace("\\\n", " "), comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        pending = ""
        if tokens:
            commands.append(tokens)
    assert not pending.strip(), f"unterminated command in {DOC.name}: {pending!r}"
    return commands


def _sessrec_commands() -> list[list[str]]:
    """argv after `python -m sessrec` of every sessrec command in the page's bash blocks, in order."""
    return [tokens[3:] for lang, body, _ in _blocks() if lang == "bash" for tokens in _shell_commands(body)
            if tokens[:3] == ["python", "-m", "sessrec"]]


def _files() -> dict[str, str]:
    """The YAML files the page tells the user to write: path -> content."""
    return {named: body for lang, body, named in _blocks() if named and lang == "yaml"}


def _shown_headers() -> dict[str, str]:
    """The first line of each input CSV the page shows: path -> header."""
    return {named: body.splitlines()[0] for _, body, named in _blocks() if named and named.endswith(".csv")}


def _write_shop(root: Path) -> Path:
    """my-shop/clicks.csv (visit, product, ts), my-shop/products.csv (sku, title, price, brand, category)."""
    generated = root / "generated"
    with pytest.raises(SystemExit) as stop:
        main(["generate", "--out", str(generated), "--n-items", "300", "--n-sessions", "1500",
              "--n-topics", "10"])
    assert stop.value.code == 0
    shop = root / "my-shop"
    shop.mkdir()
    events = pd.read_csv(generated / "events.tsv", sep="\t")
    pd.DataFrame({
        "visit": "V" + events["SessionId"].map("{:05d}".format),
        "product": "SKU-" + events["ItemId"].map("{:04d}".format),
        "ts": pd.to_datetime(events["Time"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S"),
    }).to_csv(shop / "clicks.csv", index=False)
    items = pd.read_parquet(generated / "items.parquet")
    products = pd.DataFrame({
        "sku": "SKU-" + items["item_id"].map("{:04d}".format),
        "title": items["category"].map(CATEGORIES) + " " + items["text"],
        "price": items["price"].round(2),
        "brand": items["brand"],
        "category": items["category"].map(CATEGORIES) + "s",
    })
    rng = np.random.default_rng(0)
    for column, share in (("title", 0.05), ("price", 0.1), ("brand", 0.15)):
        products.loc[rng.random(len(products)) < share, column] = None
    products.to_csv(shop / "products.csv", index=False)
    return shop


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory) -> Path:
    """Runs the page in a fresh working folder and returns that folder."""
    work = tmp_path_factory.mktemp("first-hour")
    for name in ("configs", "notebooks", "encoders"):
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        _write_shop(work)
        for path, content in _files().items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(content, encoding="utf-8")
        for argv in _sessrec_commands():
            if argv[0] == "fit" and "--trainer.max_epochs" not in argv:  # the ID-only run: not up to 30
                argv = [*argv, *EPOCHS]
            with pytest.raises(SystemExit) as stop:
                main(argv)
            assert stop.value.code in (0, None), f"exit {stop.value.code}: sessrec {shlex.join(argv)}"
    return work


def test_the_page_shows_the_whole_path():
    """Guards the parsing above: the page still has the steps the other tests check."""
    commands = [" ".join(argv[:2]) if argv[0] in ("extract",) else argv[0] for argv in _sessrec_commands()]
    assert commands == ["prepare", "extract text", "extract properties", "test", "fit", "test", "fit", "test",
                        "predict", "notebook"]
    assert set(_files()) == {"my-shop/data.yaml", "my-shop/log.yaml", "my-shop/prnn.yaml"}
    for content in _files().values():
        assert isinstance(yaml.safe_load(content), dict)
    assert _shown_headers() == {"my-shop/clicks.csv": "visit,product,ts",
                                "my-shop/products.csv": "sku,title,price,brand,category"}


def test_the_generated_files_have_the_shown_columns(tmp_path):
    shop = _write_shop(tmp_path)
    for path, header in _shown_headers().items():
        assert (tmp_path / path).read_text().splitlines()[0] == header
    products = pd.read_csv(shop / "products.csv")
    assert products[["title", "price", "brand"]].isna().any().all()  # missing values in each


def test_prepare_and_features(first_hour):
    work = first_hour
    meta = json.loads((work / "my-shop/prepared/meta.json").read_text())
    splits = meta["splits"]
    assert all(splits[s]["sessions"] > 100 for s in ("train", "valid", "test", "train_full"))
    assert splits["train_full"]["events"] == splits["train"]["events"] + splits["valid"]["events"]
    items = pd.read_parquet(work / "my-shop/prepared/items.parquet")
    assert items["item_id"].str.startswith("SKU-").all() and len(items) == meta["n_items"]
    for name in ("text.npz", "text.ids.txt", "properties.parquet"):
        assert (work / "my-shop/features" / name).is_file()
    properties = pd.read_parquet(work / "my-shop/features/properties.parquet")
    assert {"item_id", "brand", "category", "price"} <= set(properties.columns)
    assert properties["price"].isna().any() and properties["brand"].isna().any()  # kept missing, not dropped


def test_runs(first_hour):
    runs = first_hour / "runs/my-shop"
    assert (runs / "iknn/config-test.yaml").is_file()
    for run in ("id", "prnn"):
        for name in ("config.yaml", "config-test.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
            assert (runs / run / name).is_file(), f"{run}/{name}"
        metrics = pd.read_csv(runs / run / "metrics.csv")  # the training log, not replaced by `test`
        assert metrics["train_loss_step"].notna().any() and metrics["val_mrr@20"].notna().any()
        assert not any(c.startswith("test_") for c in metrics.columns)
    config = yaml.safe_load((runs / "prnn/config.yaml").read_text())
    assert set(config["model"]["init_args"]["net"]["init_args"]["encoders"]) == {"id", "text", "properties"}
    assert any("TrainingSchedule" in c["class_path"] for c in config["trainer"]["callbacks"])


def test_recommendations(first_hour):
    work = first_hour
    recs = pd.read_csv(work / "runs/my-shop/recommendations.csv")
    assert list(recs.columns) == ["session", "session_key", "rank", "item_id", "score"]
    n_test = json.loads((work / "my-shop/prepared/meta.json").read_text())["splits"]["test"]["sessions"]
    assert recs["session"].nunique() == n_test and len(recs) == 20 * n_test
    clicks = pd.read_csv(work / "my-shop/clicks.csv")
    assert recs["session_key"].isin(clicks["visit"]).all()  # joins back to the log by visit
    assert recs.groupby("session")["session_key"].nunique().eq(1).all() and recs["session_key"].nunique() == n_test
    assert (recs.groupby("session")["rank"].apply(list) == [list(range(1, 21))] * n_test).all()
    assert recs["item_id"].isin(pd.read_csv(work / "my-shop/products.csv")["sku"]).all()
    assert (recs.groupby("session")["score"].diff().dropna() <= 0).all()  # best first


def test_analysis_notebook(first_hour):
    nb = nbformat.read(first_hour / "runs/my-shop/analysis.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "ITEMS_ID_COLUMN = 'sku'" in injected.source
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps(outputs)
    for run in ("item-kNN", "ID only", "p-RNN"):
        assert f"{run}: runs/my-shop/" in text  # loaded, not skipped
    assert "best.ckpt" in text and "SKU-" in text  # the best epochs; example recommendations
    assert "No `metrics.csv` found" not in text  # the runs' training logs were found
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # curves, popularity, buckets
