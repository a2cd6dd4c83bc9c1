"""The four tiny stage configs through ``daefr fit``: each overfits a fixed batch, each starts from the previous
stage's checkpoints, and the exported restorer loads with ``daefr.load_restorer``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from daefr.cli import main

REPO = Path(__file__).resolve().parents[2]
FIXED = json.dumps({"class_path": "daefr.testing.stages.FixedBatchDataModule",
                    "init_args": {"image_size": 32, "batch_size": 2}})


def _losses(run_dir: Path, key: str) -> list[float]:
    files = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    assert files, f"no metrics.csv under {run_dir}"
    rows = list(csv.DictReader(files[-1].open()))
    return [float(r[key]) for r in rows if r.get(key)]


def _fit(stage: str, steps: int, *extra: str) -> None:
    args = ["fit", "--config", str(REPO / "configs" / "tiny" / f"{stage}.yaml"), "--trainer.max_steps", str(steps),
            "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", str(steps), "--data", FIXED,
            "--model.init_args.learning_rate", "1e-3", *extra]
    assert main(args) == 0, f"daefr fit failed for {stage}"


def _decreases(values: list[float], factor: float) -> bool:
    return sum(values[-3:]) / 3 < factor * sum(values[:3]) / 3


@pytest.mark.slow
def test_tiny_chain_overfits_and_initialises_each_stage_from_the_previous(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the tiny configs write to and read from runs/tiny/... (relative paths)
    steps = 10
    _fit("hq_codebook", steps)
    _fit("lq_codebook", steps)
    runs = tmp_path / "runs" / "tiny"
    for stage in ("hq_codebook", "lq_codebook"):
        rec = _losses(runs / stage, "train/rec_loss")
        assert len(rec) == steps and _decreases(rec, 0.85), f"{stage} did not overfit: {rec}"
        assert (runs / stage / "checkpoints" / "last.ckpt").is_file()
        assert _losses(runs / stage, "val/psnr"), "validation PSNR was not logged"
        assert list((runs / stage / "logs").glob("version_*/images/*.png")), "no validation panel written"

    _fit("association", steps)
    assoc = _losses(runs / "association", "train/total_loss")
    assert _decreases(assoc, 0.8), f"association loss did not go down: {assoc}"
    # initialised from the codebooks: the first HQ reconstruction is as good as where the HQ codebook ended
    hq_end = _losses(runs / "hq_codebook", "train/rec_loss")[-1]
    assert _losses(runs / "association", "train/hq/rec_loss")[0] < hq_end * 1.3

    from daefr.stages.init_weights import read_state_dict

    hq_sd, as_sd = read_state_dict(runs / "hq_codebook/checkpoints/last.ckpt"), None
    _fit("restoration", steps)
    ce = _losses(runs / "restoration", "train/ce_loss")
    assert _decreases(ce, 0.8), f"restoration CE did not go down: {ce}"
    # frozen HQ decoder: identical to the HQ codebook stage's decoder after training
    final = read_state_dict(runs / "restoration/checkpoints/last.ckpt")
    key = "vqgan.decoder.conv_out.weight"
    assert torch.equal(final["net.restorer.decoder.conv_out.weight"], hq_sd[key])
    as_sd = read_state_dict(runs / "association/checkpoints/last.ckpt")
    assert torch.equal(final["net.target_encoder.conv_in.weight"], hq_sd["vqgan.encoder.conv_in.weight"])
    assert not torch.equal(final["net.restorer.lq_encoder.conv_in.weight"], as_sd["lq.encoder.conv_in.weight"]), \
        "the LQ encoder should have trained away from its association-stage initialisation"

    import daefr

    restorer = daefr.load_restorer(runs / "restoration" / "restorer.safetensors")
    with torch.no_grad():
        out = restorer(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    face = sorted((REPO / "src/daefr/assets/demo_faces/val").glob("*.png"))[0]
    weights = str(runs / "restoration" / "restorer.safetensors")
    assert main(["restore", str(face), "--aligned", "-o", "restored", "-w", weights, "--no-progress"]) == 0
    assert (tmp_path / "restored" / "restored_faces" / face.name).is_file()
