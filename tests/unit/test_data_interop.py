"""Interoperability with plain WebDataset, both ways: our shards in a ``webdataset.WebDataset`` pipeline,
and shards made by ``webdataset.ShardWriter`` (other keys, JPEG/PNG/WebP, ``.cls``/``.json`` side files,
gzip) in ``FaceDataModule``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from daefr.data import FaceDataModule
from daefr.data.shards import ShardOptions, write_shards
from data_helpers import make_image_folder, make_paired_folder, to_pixels


def test_daefr_shards_read_by_a_plain_webdataset_pipeline(tmp_path: Path) -> None:
    expected = make_image_folder(tmp_path / "src", n_good=7, bad=False)
    manifest = write_shards(tmp_path / "src", tmp_path / "out", ShardOptions(maxcount=3))
    pattern = str(tmp_path / "out" / manifest["pattern"])
    dataset = wds.WebDataset(pattern, shardshuffle=False, empty_check=False).decode("rgb8")
    seen = {}
    for sample in dataset:
        meta = sample["json"]
        assert meta["key"] == sample["__key__"] and meta["width"] == 32
        seen[sample["__key__"]] = sample["png"]
    assert sorted(seen) == sorted(expected)
    for key, pixels in seen.items():
        np.testing.assert_array_equal(pixels, expected[key])

    pairs = make_paired_folder(tmp_path / "pairs", n=3)
    write_shards(tmp_path / "pairs", tmp_path / "pout")
    paired = wds.WebDataset(str(tmp_path / "pout" / "shard-000000.tar"), shardshuffle=False, empty_check=False)
    for sample in paired.decode("rgb8"):
        lq, gt = pairs[sample["__key__"]]
        np.testing.assert_array_equal(sample["lq.png"], lq)
        np.testing.assert_array_equal(sample["hq.png"], gt)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_shards_from_plain_webdataset_shardwriter_feed_the_datamodule(tmp_path: Path, suffix: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    expected: dict[str, np.ndarray] = {}
    folder = tmp_path / "wds"
    folder.mkdir()
    with wds.ShardWriter(str(folder / f"faces-%06d{suffix}"), maxcount=4, verbose=0) as sink:
        for i in range(10):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            fmt, ext = [("PNG", "png"), ("WEBP", "webp"), ("JPEG", "jpg")][i % 3]
            key = f"person{i % 2}/img_{i:03d}"  # keys with folders, the layout of many public sets
            data = _encoded(pixels, fmt)
            sink.write({"__key__": key, ext: data, "cls": str(i % 2).encode(), "json": json.dumps({"id": i}).encode()})
            expected[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # JPEG: its decoded pixels
    assert len(list(folder.glob(f"*{suffix}"))) == 3
    spec = str(folder / f"faces-{{000000..000002}}{suffix}")
    dm = FaceDataModule(val=spec, image_size=24, eval_batch_size=3, max_corrupt_fraction=0.0)
    dm.setup("validate")
    seen: dict[str, np.ndarray] = {}
    for batch in dm.val_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        seen.update(zip(batch["key"], to_pixels(batch["hq"])))
    assert sorted(seen) == sorted(expected)
    for key, pixels in seen.items():
        np.testing.assert_array_equal(pixels, expected[key])
    assert dm.corrupt_counts("val") == (10, 0)
    if suffix == ".tar":  # a folder of another tool's shards without a manifest is a source as well
        dm = FaceDataModule(train=str(folder), image_size=24, batch_size=2, num_workers=0)
        dm.setup("fit")
        assert len(dm.train_dataloader()) >= 4
