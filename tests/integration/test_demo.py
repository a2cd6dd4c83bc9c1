"""`daefr demo`: the whole chain on the embedded faces, end to end (few steps: this checks wiring, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from daefr.cli import main
from daefr.demo import STAGES


@pytest.mark.slow
def test_demo_quick_writes_restorer_report_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--steps-scale", "0.1", "--out", str(out), "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 400 and summary["heldout_images"] == 40
    for side in ("daefr", "bicubic"):
        assert 5.0 < summary[side]["psnr"] < 60.0 and 0.0 < summary[side]["ssim"] <= 1.0
    assert summary["beats_bicubic"] == all(summary["daefr"][k] > summary["bicubic"][k] for k in ("psnr", "ssim"))
    for name in STAGES:
        assert (out / "checkpoints" / name / "last.ckpt").is_file(), name
    assert (out / "report" / "report.html").is_file() and (out / "comparison" / "compare.html").is_file()
    assert len(list((out / "restored").glob("*.png"))) == 40

    from daefr import load_restorer

    restorer = load_restorer(out / "restorer.safetensors")
    with torch.no_grad():
        assert restorer(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    printed = capsys.readouterr().out
    assert "held-out PSNR" in printed and "bicubic" in printed
    # a second run into the same folder is refused instead of mixing outputs
    assert main(["demo", "--quick", "--out", str(out)]) == 1


def test_demo_rejects_a_folder_without_enough_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "faces").mkdir()
    assert main(["demo", "--data", str(tmp_path / "faces"), "--out", str(tmp_path / "out")]) == 1
    assert "need at least 16 training" in capsys.readouterr().err


def test_demo_stage_configs_share_the_schedule_and_latent(tmp_path: Path) -> None:
    from daefr.demo import DemoSettings, stage_configs
    from daefr.stages import CodebookStage

    settings = DemoSettings()
    configs = stage_configs(settings, tmp_path)
    for name in STAGES:
        assert configs[name]["lr_scheduler"] == settings.lr_scheduler, name
    # one code per pixel of the 4x-downscaled test input: the latent grid equals the LQ size
    stage = CodebookStage(**configs["hq_codebook"])
    with torch.no_grad():
        z = stage.vqgan.encoder(torch.zeros(1, 3, settings.image_size, settings.image_size))
    assert z.shape[-1] == settings.image_size // settings.test_scale
    constant = stage_configs(DemoSettings(lr_scheduler=None), tmp_path)
    assert all("lr_scheduler" not in constant[name] for name in STAGES)
