"""Real H&M sample (100 photos + articles) for the extraction tests; skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

HM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hm-sample"


@pytest.fixture(scope="session")
def hm() -> Path:
    if not (HM / "articles_sample.parquet").is_file() or not (HM / "images").is_dir():
        pytest.skip(f"H&M sample not found at {HM} (shared data folder absent)")
    return HM


@pytest.fixture()
def hm_images(hm, tmp_path) -> Path:
    """A folder with the first 8 real photos (sorted by name)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for src in sorted((hm / "images").glob("*.jpg"))[:8]:
        (folder / src.name).write_bytes(src.read_bytes())
    return folder
