"""The ``official_quirks`` switch of the GAN stages on tiny models (no fixtures needed).

The fixture tests (``test_parity_training_*.py``) prove the numbers; these check the loop structure that
the switch selects: which optimizers step in each batch, and whether the discriminator's BatchNorm and
Adam state move before ``disc_start``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from daefr.stages import AssociationStage, CodebookStage
from daefr.testing.stages import FixedBatchDataModule

ENC = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16, "attn_resolutions": [],
       "z_channels": 16}
CODEBOOK = {"name": "vq", "n_embed": 32, "embed_dim": 16}
LOSS = {"name": "vqgan", "disc_start": 100, "perceptual_weight": 0,
        "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}
STEPS = 3


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class _StepOrder(Callback):
    """Records the index of every optimizer step, in order."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        for i, opt in enumerate(trainer.optimizers):
            opt.register_step_post_hook(lambda *_args, i=i: self.order.append(i))


def _fit(stage: Any) -> list[int]:
    """Fit ``STEPS`` batches; the optimizer indices in the order they stepped."""
    spy = _StepOrder()
    trainer = Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, callbacks=[spy])
    trainer.fit(stage, datamodule=FixedBatchDataModule(image_size=16, batch_size=2, steps=STEPS))
    return spy.order


def _disc_state(opt: torch.optim.Optimizer) -> list[float]:
    return [float(opt.state[p]["step"]) for g in opt.param_groups for p in g["params"] if p in opt.state]


@pytest.mark.parametrize("quirks", [True, False])
def test_codebook_discriminator_before_disc_start(quirks: bool) -> None:
    torch.manual_seed(0)
    stage = CodebookStage(ENC, ENC, CODEBOOK, loss=LOSS, learning_rate=1e-4, scale_lr=False, val_panels=0,
                          official_quirks=quirks)
    disc = stage.loss.discriminator
    before = [p.detach().clone() for p in disc.parameters()]
    order = _fit(stage)
    opt_d = stage.trainer.optimizers[1]
    bn = disc.main[3]
    if quirks:  # official: generator then discriminator in every batch; Adam steps on zero gradients
        assert order == [0, 1] * STEPS
        assert _disc_state(opt_d) and set(_disc_state(opt_d)) == {float(STEPS)}
        assert int(bn.num_batches_tracked) == 3 * STEPS  # fake in the generator step, real + fake in its own
    else:
        assert order == [0] * STEPS and not _disc_state(opt_d) and int(bn.num_batches_tracked) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))  # GAN off: D never moves
    assert stage.trainer.global_step == STEPS  # generator steps only


@pytest.mark.parametrize("quirks", [True, False])
def test_association_optimizer_order(quirks: bool) -> None:
    torch.manual_seed(0)
    stage = AssociationStage(ENC, ENC, CODEBOOK, loss=LOSS, learning_rate=1e-4, scale_lr=False, val_panels=0,
                             official_quirks=quirks)
    order = _fit(stage)
    # our optimizer list is (ae_hq, ae_lq, disc_hq, disc_lq); official stepping order is ae_hq, disc_hq, ae_lq, disc_lq
    assert order == ([0, 2, 1, 3] if quirks else [0, 1]) * STEPS
    assert stage.trainer.global_step == STEPS
    assert not any(name.endswith("logit_scale") for name, _ in stage.named_parameters())
