"""`daefr demo`: the whole chain on the embedded faces, end to end (few steps: this checks wiring, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from daefr.cli import main
from daefr.demo import ASSETS

STAGES = ("hq_codebook", "lq_codebook", "association", "restoration")


@pytest.mark.slow
def test_demo_quick_writes_restorer_report_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--steps-scale", "0.1", "--out", str(out), "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    counts = {sub: len(list((ASSETS / sub).glob("*.png"))) for sub in ("train", "val", "unseen")}
    assert summary["train_images"] == counts["train"] and summary["heldout_images"] == counts["val"]
    assert summary["unseen"]["images"] == counts["unseen"] > 0
    for scores in (summary, summary["unseen"]):
        for side in ("daefr", "bicubic"):
            assert 5.0 < scores[side]["psnr"] < 60.0 and 0.0 < scores[side]["ssim"] <= 1.0
            assert -1.0 <= scores[side]["ids"] <= 1.0  # dlib is installed with daefr[all]
        assert scores["beats_bicubic"] == all(scores["daefr"][k] > scores["bicubic"][k] for k in ("psnr", "ssim", "ids"))
    # the unseen source is a different set of people and photos than anything trained on or held out
    train_names = {p.name for p in (ASSETS / "train").glob("*.png")}
    assert not train_names & {p.name for p in (ASSETS / "val").glob("*.png")}
    assert not train_names & {p.name for p in (ASSETS / "unseen").glob("*.png")}
    manifest = json.loads((out / "training" / "chain.json").read_text())
    assert list(manifest["stages"]) == list(STAGES)
    for name in STAGES:
        assert (out / "training" / name / "checkpoints" / "final.ckpt").is_file(), name
    # --steps-scale 0.1 of the quick steps (250, 80, 40, 180)
    assert summary["stage_steps"] == {"hq_codebook": 25, "lq_codebook": 8, "association": 4, "restoration": 18}
    assert (out / "report" / "report.html").is_file() and (out / "comparison" / "compare.html").is_file()
    assert (out / "unseen_report" / "report.html").is_file() and (out / "unseen_comparison" / "compare.html").is_file()
    assert len(list((out / "restored").glob("*.png"))) == counts["val"]
    assert len(list((out / "unseen_restored").glob("*.png"))) == counts["unseen"]

    from daefr import load_restorer

    restorer = load_restorer(out / "restorer.safetensors")
    with torch.no_grad():
        assert restorer(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    printed = capsys.readouterr().out
    assert "held-out PSNR" in printed and "bicubic" in printed and "unseen source" in printed
    # a second run into the same folder is refused instead of mixing outputs
    assert main(["demo", "--quick", "--out", str(out)]) == 1


def test_demo_rejects_a_folder_without_enough_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "faces").mkdir()
    assert main(["demo", "--data", str(tmp_path / "faces"), "--out", str(tmp_path / "out")]) == 1
    assert "need at least 16 training" in capsys.readouterr().err


def test_demo_chain_stages_share_the_schedule_and_latent(tmp_path: Path) -> None:
    from daefr.chain import stage_config
    from daefr.demo import DemoSettings, demo_chain
    from daefr.stages import CodebookStage

    settings = DemoSettings()
    chain = demo_chain(tmp_path, settings, tmp_path / "train", tmp_path / "val")
    configs = {s.name: stage_config(chain, s) for s in chain.stages}
    assert list(configs) == list(STAGES)
    schedules = {name: c.model.init_args.lr_scheduler for name, c in configs.items()}
    assert len({str(v) for v in schedules.values()}) == 1 and schedules["restoration"]["name"] == "cosine"
    assert {name: c.trainer.max_steps for name, c in configs.items()} == {
        "hq_codebook": 2400, "lq_codebook": 500, "association": 200, "restoration": 2400}
    assert all(c.data.init_args.train == str(tmp_path / "train") for c in configs.values())
    assert configs["hq_codebook"].data.init_args.degradation is None
    # one code per pixel of the 4x-downscaled test input: the latent grid equals the LQ size
    args = configs["hq_codebook"].model.init_args
    stage = CodebookStage(encoder=dict(args.encoder), decoder=dict(args.decoder), codebook=dict(args.codebook),
                          loss=dict(args.loss))
    with torch.no_grad():
        z = stage.vqgan.encoder(torch.zeros(1, 3, settings.image_size, settings.image_size))
    assert z.shape[-1] == settings.image_size // settings.heldout.scale
