"""A new restoration domain trained end to end through the example plugin's entry points only."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from daefr.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "plugins" / "daefr-example-domain" / "configs"
STEPS = {"hq_codebook": 24, "lq_codebook": 12, "association": 6, "restoration": 24}


def _train_losses(run_dir: Path, key: str) -> list[float]:
    metrics = sorted(run_dir.glob("logs/**/metrics.csv"))
    assert metrics, f"no CSV metrics under {run_dir}"
    with metrics[-1].open() as handle:
        return [float(r[key]) for r in csv.DictReader(handle) if r.get(key)]


@pytest.mark.slow
def test_text_domain_trains_through_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    for stage, steps in STEPS.items():
        code = main(["fit", "--config", str(CONFIGS / f"{stage}.yaml"), "--trainer.max_steps", str(steps),
                     "--trainer.log_every_n_steps", "2"])
        assert code == 0, stage
        assert (tmp_path / "runs" / "text" / stage / "checkpoints" / "last.ckpt").is_file(), stage

    hq_losses = _train_losses(tmp_path / "runs" / "text" / "hq_codebook", "train/rec_loss")
    assert len(hq_losses) >= 4 and hq_losses[-1] < hq_losses[0], hq_losses

    from daefr import load_restorer

    restorer = load_restorer(tmp_path / "runs" / "text" / "restoration" / "restorer.safetensors")
    assert type(restorer.lq_encoder).__module__ == "daefr_example_domain.encoders"
    assert type(restorer.hq_encoder).__name__ == "PlainConvEncoder"
    with torch.no_grad():
        out = restorer(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
