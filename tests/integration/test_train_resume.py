"""Exact resume (GAN stage, EMA, optimizers, schedules, data position) and stage options through the Trainer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from daefr.data import FaceDataModule
from daefr.stages import CodebookStage, EMAWeights, NonFiniteLossError, ResumeState
from daefr.testing.stages import FixedBatchDataModule, ShuffledDataModule

REPO = Path(__file__).resolve().parents[2]
ENC = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16,
       "attn_resolutions": [], "z_channels": 16}
LOSS = {"name": "vqgan", "disc_start": 2, "perceptual_weight": 0, "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}


def _stage(seed: int, **kwargs: object) -> CodebookStage:
    seed_everything(seed)
    return CodebookStage(encoder=ENC, decoder=ENC, codebook={"name": "vq", "n_embed": 32, "embed_dim": 16}, loss=LOSS,
                         learning_rate=1e-3, scale_lr=False,
                         lr_scheduler={"name": "multistep", "milestones": [3, 6], "gamma": 0.5}, **kwargs)  # type: ignore[arg-type]


def _trainer(root: Path, steps: int, ema: EMAWeights) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, max_steps=steps, deterministic=True, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=0, default_root_dir=str(root),
                   callbacks=[ModelCheckpoint(dirpath=str(root / "ckpt"), save_last=True, every_n_train_steps=2), ResumeState(), ema])


def _faces(tmp: Path, n: int = 8) -> Path:
    folder = tmp / "faces"
    folder.mkdir(exist_ok=True)
    for src in sorted((REPO / "src/daefr/assets/demo_faces/train").glob("*.png"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


def _data(kind: str, tmp: Path) -> LightningDataModule:
    """8 images, batch 2: 4 batches per epoch."""
    if kind == "shuffled":  # DataLoader(shuffle=True); order, flips and noise come from the global RNG
        return ShuffledDataModule(n=8, image_size=16, batch_size=2)
    # FaceDataModule: order, flips and degradations seeded by (seed, epoch, keys)
    return FaceDataModule(train=str(_faces(tmp)), image_size=24, batch_size=2, num_workers=0, flip=True, seed=0,
                          degradation={"name": "daefr_small"})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["shuffled", "faces"])
def test_resume_gan_stage_is_bit_exact(tmp_path, kind: str) -> None:
    torch.set_num_threads(1)
    straight = _stage(0, target="lq")
    ema_a = EMAWeights(decay=0.9)
    _trainer(tmp_path / "a", 8, ema_a).fit(straight, datamodule=_data(kind, tmp_path))

    first = _stage(0, target="lq")
    _trainer(tmp_path / "b", 4, EMAWeights(decay=0.9)).fit(first, datamodule=_data(kind, tmp_path))
    ckpt = tmp_path / "b" / "ckpt" / "last.ckpt"
    resumed = _stage(123, target="lq")  # other init: everything must come from the checkpoint
    ema_c = EMAWeights(decay=0.9)
    trainer = _trainer(tmp_path / "c", 8, ema_c)
    trainer.fit(resumed, datamodule=_data(kind, tmp_path), ckpt_path=str(ckpt))

    assert trainer.global_step == 8 and straight.loss.gan_active(8)
    a, c = straight.state_dict(), resumed.state_dict()
    assert a.keys() == c.keys()
    diff = [k for k in a if not torch.equal(a[k], c[k])]
    assert not diff, f"resumed weights differ from the uninterrupted run: {diff[:5]}"
    assert all(torch.equal(ema_a.shadow[k], ema_c.shadow[k]) for k in ema_a.shadow)
    assert ema_c.num_updates == ema_a.num_updates
    opt_a = straight.optimizers()[0].optimizer.state_dict()  # type: ignore[index]
    opt_c = resumed.optimizers()[0].optimizer.state_dict()  # type: ignore[index]
    assert opt_a["param_groups"][0]["lr"] == opt_c["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.25)


@pytest.mark.slow
def test_accumulation_clipping_nan_guard_and_compile(tmp_path) -> None:
    torch.set_num_threads(1)
    # two micro-batches of 2 == one batch of 2 repeated (mean losses): same weights as accumulate 1 on it
    data = FixedBatchDataModule(image_size=16, batch_size=2, steps=4)
    plain = _stage(0)
    Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
            enable_model_summary=False, limit_val_batches=0).fit(plain, datamodule=data)
    accum = _stage(0, accumulate_grad_batches=2, gradient_clip_val=1e6, compile={"backend": "eager"})
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(accum, datamodule=FixedBatchDataModule(image_size=16, batch_size=2, steps=4))
    assert trainer.global_step == 1
    one = _stage(0)
    Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
            enable_model_summary=False, limit_val_batches=0).fit(one, datamodule=data)
    w_acc, w_one = accum.vqgan.encoder.conv_in.weight, one.vqgan.encoder.conv_in.weight
    assert torch.allclose(w_acc, w_one, atol=1e-6), "accumulating identical micro-batches must equal one step"
    assert not torch.allclose(w_one, plain.vqgan.encoder.conv_in.weight)

    bad = _stage(0, max_nonfinite_steps=3)
    with torch.no_grad():
        bad.vqgan.decoder.conv_out.bias.fill_(float("nan"))
    before = bad.vqgan.encoder.conv_in.weight.detach().clone()
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        Trainer(accelerator="cpu", max_steps=10, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                enable_model_summary=False, limit_val_batches=0).fit(bad, datamodule=data)
    assert bad.nonfinite_total == 3
    assert torch.equal(before, bad.vqgan.encoder.conv_in.weight), "skipped steps must not change the weights"
