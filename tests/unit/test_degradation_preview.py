"""`daefr degrade-preview` writes a grid of one face under each preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from daefr.cli import main


def test_preview_writes_grid(tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).resize((64, 64)).save(face)
    out = tmp_path / "grid.png"
    rc = main(["degrade-preview", str(face), "-o", str(out), "--size", "48", "--samples", "2",
               "--presets", "daefr_small", "gfpgan"])
    assert rc == 0 and out.is_file()
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape == (2 * (48 + 52), 110 + 3 * 48, 3)
    caption = grid[48:100, 158:206]  # the text under the first degraded tile
    assert (caption < 128).any(), "the tile's parameters are not written under it"
    # first column is the input, the degraded tiles differ from it
    tile_in = grid[:48, 110:158].astype(int)
    tile_lq = grid[:48, 158:206].astype(int)
    assert np.abs(tile_in - tile_lq).mean() > 1.0


def test_preview_reports_unreadable_image(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    rc = main(["degrade-preview", str(bad), "-o", str(tmp_path / "x.png")])
    assert rc == 1
    assert "cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_tile_caption_names_the_sampled_parameters() -> None:
    import torch

    from daefr.commands.degrade_preview import tile_caption
    from daefr.registry import REGISTRY

    result = REGISTRY.build("degradations", "daefr_small")(torch.rand(2, 3, 48, 48),
                                                           generator=torch.Generator().manual_seed(0))
    text = tile_caption(result.params, 1)
    p = result.params
    assert f"down x{float(p['scale'][1]):.2f}" in text and f"jpeg q{int(p['jpeg_quality'][1])}" in text
    assert f"noise {float(p['noise_sigma'][1]):.1f}" in text and "blur" in text
    assert tile_caption(result.params, 0) != text

