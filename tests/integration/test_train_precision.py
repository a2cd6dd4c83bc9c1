"""bf16-mixed training agrees with fp32: each tiny stage, same seed, same batches, loss curves compared.

Tolerance (stated in docs/cluster.md, "Mixed precision"): over 30 steps at learning rate 1e-4, at every
step the bf16-mixed loss is within 10% (relative) of the fp32 loss, and the mean relative gap is under
3%. bf16 keeps 8 mantissa bits (~0.4% rounding per operation); the gap grows as the two runs' weights
drift apart (measured here: mean gap 0.4-2.1%, worst step 2.1-6.3%). Both runs must learn (the loss falls), and no
step may be skipped as non-finite.

Compared curves: the codebook stage's reconstruction loss (L1 + LPIPS; GAN on from step 10) and its
total loss before the GAN starts: once the GAN is on, the total is a difference of comparable terms
(nll + w * g_loss with g_loss < 0), and the adversarial game amplifies any difference: fp32 against
bf16 then differ by up to 90% at single steps while the reconstruction loss stays within a few percent.
The association stage likewise: both branches' reconstruction losses over all steps, and its total (both
branches + CLIP loss) before the GAN starts at step 10. The restoration loss over all steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from daefr.stages import AssociationStage, CodebookStage, RestorationStage
from daefr.testing.stages import FixedBatchDataModule

LAYOUT: dict[str, Any] = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16,
                          "attn_resolutions": [8], "z_channels": 32, "dropout": 0.0, "enable_mid": True, "head_size": 1}
ENC = {"name": "vqgan", **LAYOUT}
CODEBOOK = {"name": "vq", "n_embed": 32, "embed_dim": 32}
ARCH = {**LAYOUT, "embed_dim": 32, "n_embed": 32, "fusion_heads": 2, "n_layers": 1, "n_head": 2, "dim_mlp": 32,
        "transformer_dim": 16}
STEPS = 30
DISC_START = 10
LEARNING_RATE = 1e-4
STEP_TOLERANCE = 0.10
MEAN_TOLERANCE = 0.03
# (stage, logged loss, first step compared, last step compared)
CURVES = {"codebook": [("train/nll_loss", 0, STEPS), ("train/loss", 0, DISC_START)],
          "association": [("train/hq/rec_loss", 0, STEPS), ("train/lq/rec_loss", 0, STEPS), ("train/loss", 0, DISC_START)],
          "restoration": [("train/loss", 0, STEPS)]}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class LossCurves(Callback):
    """Collects every logged ``train/*`` value after every optimizer step."""

    def __init__(self) -> None:
        self.curves: dict[str, list[float]] = {}

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/"):
                self.curves.setdefault(key, []).append(float(value))


def _loss_spec(lpips_dir: Path) -> dict[str, Any]:
    return {"name": "vqgan", "disc_start": DISC_START, "perceptual_weight": 1.0,
            "perceptual": {"name": "lpips", "vgg_path": str(lpips_dir / "vgg16-397923af.pth"),
                           "lin_path": str(lpips_dir / "vgg.pth")},
            "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}


def _stage(name: str, lpips_dir: Path) -> Any:
    common = {"learning_rate": LEARNING_RATE, "scale_lr": False}
    if name == "codebook":
        return CodebookStage(encoder=ENC, decoder=ENC, codebook=CODEBOOK, loss=_loss_spec(lpips_dir), **common)
    if name == "association":
        return AssociationStage(encoder=ENC, decoder=ENC, codebook=CODEBOOK, loss=_loss_spec(lpips_dir), **common)
    return RestorationStage(arch=ARCH, **common)


def _train(name: str, precision: str, lpips_dir: Path) -> tuple[dict[str, list[float]], Any]:
    seed_everything(3, verbose=False)
    stage = _stage(name, lpips_dir)
    curve = LossCurves()
    trainer = Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=STEPS, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=[curve], deterministic=True)
    trainer.fit(stage, datamodule=FixedBatchDataModule(image_size=16, batch_size=2, steps=STEPS))
    return curve.curves, stage


@pytest.fixture(scope="module")
def lpips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daefr.testing.weights import write_random_lpips_weights

    folder = tmp_path_factory.mktemp("lpips")
    write_random_lpips_weights(folder)
    return folder


@pytest.mark.parametrize("name", ["codebook", "association", "restoration"])
def test_bf16_mixed_loss_curve_follows_fp32(name: str, lpips_dir: Path) -> None:
    fp32, stage32 = _train(name, "32-true", lpips_dir)
    bf16, stage16 = _train(name, "bf16-mixed", lpips_dir)
    assert stage32.nonfinite_total == 0 and stage16.nonfinite_total == 0
    for key, first, last in CURVES[name]:
        ref, low = fp32[key][first:last], bf16[key][first:last]
        assert len(ref) == len(low) == last - first, key
        gaps = [abs(b - f) / max(abs(f), 1e-3) for f, b in zip(ref, low)]
        worst = max(gaps)
        assert worst < STEP_TOLERANCE, f"{key}: worst step gap {worst:.3f} at step {first + gaps.index(worst)}"
        assert sum(gaps) / len(gaps) < MEAN_TOLERANCE, f"{key}: mean gap {sum(gaps) / len(gaps):.4f}"
        assert any(g > 0 for g in gaps), f"{key}: identical curves; did autocast run?"
        for curve in (ref, low):
            assert sum(curve[-3:]) < sum(curve[:3]), f"{key} does not fall: {curve}"
    if name == "codebook":  # the GAN really ran in both
        assert fp32["train/d_weight"][-1] > 0 and bf16["train/d_weight"][-1] > 0
    # weights stay float32 under mixed precision (autocast casts per operation only)
    assert all(p.dtype == torch.float32 for p in stage16.parameters())


def test_precision_sensitive_parts_compute_in_float32() -> None:
    """Under bf16 autocast: quantizer distances/loss, CLIP loss and the adaptive GAN weight stay float32."""
    from daefr.losses.association import PatchCLIPLoss
    from daefr.losses.vqgan_loss import adaptive_gan_weight
    from daefr.nn.quantizer import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(n_embed=64, embed_dim=32)
    vq.embedding.weight.data.normal_()
    z = torch.randn(2, 32, 4, 4)
    ref = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = vq(z)
        clip = PatchCLIPLoss()(torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4))
        layer = torch.nn.Conv2d(4, 3, 3, padding=1)
        out = layer(torch.randn(1, 4, 8, 8))
        weight = adaptive_gan_weight(out.abs().mean(), -out.mean() * 1e-3, layer.weight)
    assert torch.equal(low.indices, ref.indices)  # same codes: the nearest-code search ran in float32
    assert low.loss.dtype == torch.float32 and torch.allclose(low.loss, ref.loss)
    assert clip.loss.dtype == torch.float32
    assert weight.dtype == torch.float32 and float(weight) > 1
