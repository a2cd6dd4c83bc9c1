"""Restoration stage on Lightning's automatic optimisation; test/predict steps; the code-usage metric."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from daefr.errors import ConfigError
from daefr.stages import (
    AssociationStage,
    CodebookStage,
    NonFiniteLossError,
    RestorationStage,
    RestoredImageWriter,
)
from daefr.stages.reporting import CodeUsage
from daefr.testing.stages import FixedBatchDataModule

REPO = Path(__file__).resolve().parents[2]
LAYOUT = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16, "attn_resolutions": [],
          "z_channels": 16, "dropout": 0.0, "enable_mid": True, "head_size": 1}
ARCH = {**LAYOUT, "embed_dim": 32, "n_embed": 32, "fusion_heads": 2, "n_layers": 1, "n_head": 2, "dim_mlp": 32,
        "transformer_dim": 16}
ENC = {"name": "vqgan", **{k: v for k, v in LAYOUT.items() if k != "dropout"}}
LOSS = {"name": "vqgan", "disc_start": 0, "perceptual_weight": 0, "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _stage(**kwargs: Any) -> RestorationStage:
    seed_everything(0)
    return RestorationStage(arch=ARCH, learning_rate=1e-3, scale_lr=False, val_panels=0, **kwargs)


def _trainer(steps: int, **kwargs: Any) -> Trainer:
    return Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                   enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, **kwargs)


def _data(steps: int = 4) -> FixedBatchDataModule:
    return FixedBatchDataModule(image_size=16, batch_size=2, steps=steps)


def _fit_recording_grad_norms(stage: RestorationStage, trainer: Trainer) -> list[float]:
    """Fit; the global gradient norm of every optimizer step (post-step hook: the gradients the step used)."""
    norms: list[float] = []
    original = stage.configure_optimizers

    def configure() -> Any:
        optimizers, schedulers = original()
        optimizers[0].register_step_post_hook(lambda opt, *_: norms.append(float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g["params"]
                         if p.grad is not None])))))
        return optimizers, schedulers

    stage.configure_optimizers = configure  # type: ignore[method-assign]
    trainer.fit(stage, datamodule=_data())
    return norms


def test_trainer_accumulation_and_clipping_apply_to_the_restoration_stage() -> None:
    one = _stage()
    norms_one = _fit_recording_grad_norms(one, _trainer(1))
    accum = _stage()
    trainer = _trainer(1, accumulate_grad_batches=2)
    norms_acc = _fit_recording_grad_norms(accum, trainer)
    assert trainer.global_step == 1
    # two identical micro-batches == one batch (mean loss): same gradient, same step
    assert norms_acc[0] == pytest.approx(norms_one[0], rel=1e-4)
    w_acc, w_one = accum.net.restorer.lq_encoder.conv_in.weight, one.net.restorer.lq_encoder.conv_in.weight
    assert torch.allclose(w_acc, w_one, atol=1e-6)
    clipped = _fit_recording_grad_norms(_stage(), _trainer(1, gradient_clip_val=norms_one[0] / 10))
    assert clipped[0] == pytest.approx(norms_one[0] / 10, rel=1e-3), "the Trainer's gradient_clip_val must clip"


@pytest.mark.parametrize("option", ["accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm"])
def test_manual_stage_options_are_refused_with_the_trainer_option(option: str) -> None:
    value = {"accumulate_grad_batches": 2, "gradient_clip_val": 1.0, "gradient_clip_algorithm": "value"}[option]
    with pytest.raises(ConfigError, match=rf"does not take {option}.*--trainer\.{option}"):
        _stage(**{option: value})


def test_nonfinite_loss_skips_the_step_and_stops_after_the_limit() -> None:
    bad = _stage(max_nonfinite_steps=3)
    with torch.no_grad():
        bad.net.restorer.lq_encoder.conv_out.bias.fill_(float("nan"))
    before = {k: v.detach().clone() for k, v in bad.net.restorer.predictor.state_dict().items()}
    trainer = _trainer(10)
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        trainer.fit(bad, datamodule=_data(10))
    assert bad.nonfinite_total == 3
    after = bad.net.restorer.predictor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "skipped steps must not change the weights"


def test_test_step_logs_the_validation_metrics_on_the_test_set() -> None:
    stage = _stage()
    results = _trainer(1).test(stage, datamodule=_data(), verbose=False)
    metrics = results[0]
    for key in ("test/psnr", "test/ssim", "test/ce_loss", "test/code_accuracy", "test/perplexity", "test/codes_in_use"):
        assert key in metrics, key
    assert 0 < metrics["test/codes_in_use"] <= ARCH["n_embed"] and metrics["test/psnr"] > 0
    codebook = CodebookStage(encoder=ENC, decoder=ENC, codebook={"name": "vq", "n_embed": 32, "embed_dim": 16},
                             loss=LOSS, scale_lr=False, val_panels=0)
    metrics = _trainer(1).test(codebook, datamodule=_data(), verbose=False)[0]
    assert {"test/psnr", "test/rec_loss", "test/perplexity"} <= set(metrics)
    association = AssociationStage(encoder=ENC, decoder=ENC, codebook={"name": "vq", "n_embed": 32, "embed_dim": 16},
                                   loss=LOSS, scale_lr=False, val_panels=0)
    metrics = _trainer(1).test(association, datamodule=_data(), verbose=False)[0]
    assert {"test/psnr", "test/hq/psnr", "test/lq/ssim", "test/lq/codes_in_use", "test/clip_loss"} <= set(metrics)
    assert metrics["test/psnr"] == metrics["test/hq/psnr"]


def test_predict_step_restores_the_lq_images() -> None:
    stage = _stage()
    data = _data()
    out = _trainer(1).predict(stage, datamodule=data)
    assert out is not None and len(out) == 1
    restored = out[0]["restored"]  # type: ignore[index]
    assert restored.shape == data.batch["lq"].shape and float(restored.abs().max()) <= 1.0
    assert out[0]["key"] == data.batch["key"]  # type: ignore[index]
    stage.eval()
    with torch.no_grad():
        assert torch.equal(restored, stage.net.restorer(data.batch["lq"]).clamp(-1, 1))


def test_prediction_writer_writes_one_png_per_key(tmp_path: Path) -> None:
    from PIL import Image

    stage, data = _stage(), _data()
    out_dir = tmp_path / "restored"
    _trainer(1, callbacks=[RestoredImageWriter(str(out_dir))]).predict(stage, datamodule=data, return_predictions=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["fixed0.png", "fixed1.png"]
    stage.eval()
    with torch.no_grad():
        expected = ((stage.net.restorer(data.batch["lq"]).clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1)
    written = torch.from_numpy(np.asarray(Image.open(out_dir / "fixed1.png"))).float()
    assert written.shape == expected[1].shape and float((written - expected[1]).abs().max()) <= 0.5 + 1e-3
    with pytest.raises(ConfigError, match="is not empty"):
        _trainer(1, callbacks=[RestoredImageWriter(str(out_dir))]).predict(stage, datamodule=data)


def test_code_usage_sums_counts_across_processes() -> None:
    a, b, whole = CodeUsage(8), CodeUsage(8), CodeUsage(8)
    a.update(torch.tensor([0, 1, 1]))
    b.update(torch.tensor([[3, 3], [1, 7]]))
    whole.update(torch.tensor([0, 1, 1, 3, 3, 1, 7]))
    a.merge_state(b)  # what the DDP sync does with the "sum" reduction
    assert torch.equal(a.counts, whole.counts)
    stats = a.compute()
    assert float(stats["codes_in_use"]) == 4 and float(stats["usage_fraction"]) == 0.5
    p = torch.tensor([1, 3, 2, 1], dtype=torch.float64) / 7
    assert float(stats["perplexity"]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)


def test_daefr_test_reports_the_metrics_on_a_test_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daefr.cli import main

    monkeypatch.chdir(REPO)  # the tiny config names the demo faces relative to the repository root
    code = main(["test", "--config", "configs/tiny/restoration.yaml", "--model.init_args.init_hq_codebook_from", "null",
                 "--model.init_args.init_association_from", "null", "--trainer.enable_progress_bar", "false",
                 "--data.init_args.test", "src/daefr/assets/demo_faces/val", "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0
    metrics = sorted(tmp_path.glob("logs/**/metrics.csv"))
    assert metrics, f"no CSV metrics under {tmp_path}"
    with metrics[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    logged = {k: float(v) for row in rows for k, v in row.items() if v}
    assert {"test/psnr", "test/ssim", "test/code_accuracy", "test/codes_in_use"} <= set(logged)
    assert logged["test/psnr"] > 0
