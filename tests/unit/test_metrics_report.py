"""Report writer: strict JSON (inf as "inf"), CSV round trip, HTML content, best/worst ranking, compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from daefr.metrics.images import write_rgb8
from daefr.metrics.report import json_number, parse_number, rank_rows, read_run, write_comparison, write_run
from daefr.metrics.suite import EvaluationResult, MetricsConfig, evaluate_folders


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_numbers_round_trip() -> None:
    for value in (1.5, math.inf, -math.inf, None, 0.0):
        assert parse_number(json_number(value)) == value
    assert json_number(math.inf) == "inf"
    assert math.isnan(parse_number(json_number(math.nan)))  # type: ignore[arg-type]


def test_rank_rows_respects_direction() -> None:
    rows = [{"name": str(i), "psnr": p, "lpips": lp} for i, (p, lp) in enumerate([(20, 0.3), (30, 0.1), (25, 0.2)])]
    best, worst = rank_rows(rows, "psnr", 1)
    assert best[0]["name"] == "1" and worst[0]["name"] == "0"
    best, worst = rank_rows(rows, "lpips", 2)
    assert [r["name"] for r in best] == ["1", "2"] and [r["name"] for r in worst] == ["0"]


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    gt, restored, lq = tmp_path / "gt", tmp_path / "restored", tmp_path / "lq"
    for i in range(3):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write_rgb8(gt / f"face{i}.png", img)
        noisy = np.clip(img + rng.normal(0, 4 * (i + 1), img.shape), 0, 255).astype(np.uint8)
        write_rgb8(restored / f"face{i}.png", img if i == 0 else noisy)  # face0 is perfect: PSNR inf
        write_rgb8(lq / f"face{i}.png", noisy[::2, ::2])
    return gt, restored, lq


def test_write_run_outputs(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    gt, restored, lq = folders
    write_rgb8(restored / "extra.png", np.zeros((32, 32, 3), np.uint8))  # no GT: reported, not scored
    result = evaluate_folders(restored, gt, lq, MetricsConfig(metrics=("psnr", "ssim", "niqe")))
    assert result.info["unpaired"] == ["extra"] and len(result.rows) == 3
    assert "niqe" in result.skipped and "niqe_pris_params.npz" in result.skipped["niqe"]
    assert result.rows[0]["psnr"] == math.inf and result.summary["psnr"] == math.inf
    paths = write_run(result, tmp_path / "run", title="unit run")
    data = _strict_loads(paths["json"].read_text())
    assert isinstance(data, dict) and data["summary"]["psnr"] == "inf" and data["skipped"]["niqe"]
    summary, rows = read_run(tmp_path / "run")
    assert summary["summary"]["psnr"] == math.inf
    assert [r["name"] for r in rows] == ["face0", "face1", "face2"]
    assert rows[1]["psnr"] == pytest.approx(result.rows[1]["psnr"], rel=1e-12)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") >= 6  # LQ | restored | GT strips for best and worst
    assert 'id="per-image"' in page and "<script>" in page and "skipped" in page
    assert "Best images by PSNR" in page and "Worst images by PSNR" in page
    assert "only one folder, not scored: extra" in page


def test_comparison(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    gt, restored, _ = folders
    cfg = MetricsConfig(metrics=("psnr", "ssim"))
    write_run(evaluate_folders(restored, gt, None, cfg), tmp_path / "a")
    write_run(evaluate_folders(gt, gt, None, cfg), tmp_path / "b")
    paths = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    data = _strict_loads(paths["json"].read_text())
    assert isinstance(data, dict)
    assert data["summary"]["ssim"]["b"] == 1.0 and data["summary"]["ssim"]["b_minus_a"] > 0
    face2 = next(i for i in data["images"] if i["name"] == "face2")
    assert face2["psnr"]["b"] == "inf" and face2["psnr"]["b_minus_a"] == "inf"
    face0 = next(i for i in data["images"] if i["name"] == "face0")
    assert face0["psnr"]["b_minus_a"] is None  # inf vs inf: no meaningful difference
    page = paths["html"].read_text()
    assert 'class="better"' in page
    assert "Images B improved most (PSNR)" in page and page.count("data:image/png;base64,") == 2 * 3  # A, B, GT
    assert "worsened most" not in page  # B is the ground truth itself: nothing got worse


def test_result_without_rows_is_rejected_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    from daefr.errors import ConfigError

    with pytest.raises(ConfigError, match="no images"):
        evaluate_folders(empty)
    with pytest.raises(ConfigError, match="not an evaluation run folder"):
        read_run(empty)
    assert EvaluationResult([], {}).skipped == {}
