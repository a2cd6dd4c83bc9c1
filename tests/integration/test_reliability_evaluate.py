"""Issue 8: ``daefr evaluate`` over the bad-input corpus: the batch goes on, reasons, exit code, inputs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daefr.cli import main
from daefr.metrics.images import IMAGE_SUFFIXES
from fixtures.bad_files import make_bad_corpus, snapshot


def test_evaluate_bad_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    restored, gt, out = tmp_path / "restored", tmp_path / "gt", tmp_path / "report"
    cases = [c for c in make_bad_corpus(restored) if c.path.suffix.lower() in IMAGE_SUFFIXES and c.path.is_file()]
    # evaluate pairs files by stem: keep one file per stem (the corpus has truncated.png and truncated.jpg)
    stems: set[str] = set()
    for case in sorted(cases, key=lambda c: c.name):
        if case.path.stem in stems:
            case.path.unlink()
        stems.add(case.path.stem)
    cases = [c for c in cases if c.path.exists()]
    gt.mkdir()
    rng = np.random.default_rng(0)
    for case in cases:  # a readable ground truth for every corpus file, same stem
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(gt / f"{case.path.stem}.png")
    before = snapshot(restored)
    code = main(["evaluate", "--restored", str(restored), "--gt", str(gt), "--out", str(out), "--metrics", "psnr"])
    err = capsys.readouterr().err
    assert code == 1, "some inputs are unreadable: the exit code says so"
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    # evaluation scores images of any size, so only the 1x1 case reads here although restore refuses it
    bad = [c for c in cases if not c.works and c.name != "one_pixel.png"]
    assert len(bad) >= 5 and len(failed) == len(bad)
    for case in bad:
        assert any(case.path.name in line and case.reason in line for line in failed), case.name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["info"]["images"] == len(cases) - len(bad), "every readable file was still scored"
    assert snapshot(restored) == before, "inputs unchanged"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name or p.name.startswith(".")]
