"""Unit tests of the stages' building blocks: VQGAN loss, codebook variants, schedules, callbacks."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from daefr.errors import WeightsNotFoundError
from daefr.losses.vqgan_loss import VQGANLoss, hinge_d_loss
from daefr.nn.codebooks import CosineCodebook, EMACodebook
from daefr.registry import REGISTRY
from daefr.stages.base import build_scheduler
from daefr.stages.callbacks import EMAWeights, capture_rng_state, restore_rng_state
from daefr.testing.networks import check_codebook

DISC = {"name": "patchgan", "ndf": 8, "n_layers": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _toy_decoder() -> tuple[nn.Conv2d, torch.Tensor]:
    torch.manual_seed(0)
    last = nn.Conv2d(4, 3, 3, padding=1)
    feat = torch.randn(2, 4, 16, 16)
    return last, feat


def test_adaptive_weight_is_grad_norm_ratio_times_disc_weight() -> None:
    loss = VQGANLoss(disc_start=0, perceptual_weight=0, discriminator=DISC)
    last, feat = _toy_decoder()
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    recon = last(feat)
    total, logs = loss.generator_loss(torch.tensor(0.1), target, recon, 5, last.weight)
    # recompute by hand
    nll = (target - recon).abs().mean()
    g = -loss.discriminator(recon).mean()
    gn = torch.autograd.grad(nll, last.weight, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, last.weight, retain_graph=True)[0].norm()
    expected = (gn / (gg + 1e-4)).clamp(0, 1e4) * 0.8
    assert torch.allclose(logs["train/d_weight"], expected, rtol=1e-5)
    assert torch.allclose(total, nll + expected * g + 0.1, rtol=1e-5)
    assert float(logs["train/disc_factor"]) == 1.0


def test_gan_terms_are_off_before_disc_start() -> None:
    loss = VQGANLoss(disc_start=100, perceptual_weight=0, discriminator=DISC)
    last, feat = _toy_decoder()
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    recon = last(feat)
    total, logs = loss.generator_loss(torch.tensor(0.2), target, recon, 99, last.weight)
    assert float(logs["train/g_loss"]) == 0.0 and float(logs["train/disc_factor"]) == 0.0
    assert torch.allclose(total, (target - recon).abs().mean() + 0.2)
    d_loss, _ = loss.discriminator_loss(target, recon, 99)
    assert float(d_loss.detach()) == 0.0
    d_on, d_logs = loss.discriminator_loss(target, recon, 100)
    expected = hinge_d_loss(loss.discriminator(target), loss.discriminator(recon.detach()))
    assert torch.allclose(d_on, expected) and float(d_on.detach()) > 0


def test_perceptual_missing_weights_names_the_file(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
        VQGANLoss(perceptual={"name": "lpips", "vgg_path": str(missing)}, discriminator=DISC)
    # switched off: no file needed
    assert VQGANLoss(perceptual_weight=0, discriminator=DISC).perceptual is None
    assert VQGANLoss(perceptual=None, discriminator=DISC).perceptual is None


def test_perceptual_term_with_weights_files_stays_frozen(tmp_path) -> None:
    from daefr.testing.weights import write_random_lpips_weights

    paths = write_random_lpips_weights(tmp_path)
    loss = VQGANLoss(disc_start=10, perceptual={"name": "lpips", "vgg_path": str(paths.vgg), "lin_path": str(paths.lin)},
                     discriminator=DISC)
    loss.train()
    assert not loss.perceptual.training and not any(p.requires_grad for p in loss.perceptual.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    _, logs = loss.generator_loss(torch.tensor(0.0), x, y, 0, None)
    assert float(logs["train/p_loss"]) > 0
    assert torch.allclose(logs["train/nll_loss"], logs["train/rec_loss"] + logs["train/p_loss"])


def test_pixel_loss_from_plugin_registry() -> None:
    loss = VQGANLoss(perceptual_weight=0, pixel_loss={"name": "charbonnier", "eps": 1e-3}, discriminator=DISC)
    x, y = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    _, logs = loss.generator_loss(torch.tensor(0.0), x, y, 0, None)
    assert float(logs["train/rec_loss"]) == pytest.approx(float(np.sqrt(1 + 1e-6)), rel=1e-5)


@pytest.mark.parametrize("name", ["cosine", "ema"])
def test_codebook_variants_conform_and_are_registered(name: str) -> None:
    codebook = REGISTRY.build("codebooks", {"name": name, "n_embed": 16, "embed_dim": 8})
    check_codebook(codebook)


def test_cosine_codebook_outputs_unit_vectors_with_straight_through_gradient() -> None:
    cb = CosineCodebook(n_embed=32, embed_dim=8)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = cb(z)
    assert torch.allclose(out.quant.norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)
    (out.quant.sum() + out.loss).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert cb.embedding.weight.grad is not None  # codes are trained by the codebook term


def test_ema_codebook_restarts_dead_codes_and_follows_the_data() -> None:
    torch.manual_seed(0)
    cb = EMACodebook(n_embed=16, embed_dim=4, decay=0.5, dead_threshold=0.05)
    cb.train()
    z = torch.randn(4, 4, 4, 4) * 3 + 5  # far from the initial codes: one code wins, the rest die
    first = cb(z)
    assert int(first.codes_in_use) <= 2
    for _ in range(6):
        out = cb(z)
    assert int(out.codes_in_use) > 4, "dead codes were not restarted at data points"
    assert not cb.embedding.weight.requires_grad
    assert float(cb.embedding.weight.mean()) > 2.0  # codes moved towards the data
    cb.eval()
    before = cb.embedding.weight.clone()
    cb(z)
    assert torch.equal(before, cb.embedding.weight), "eval mode must not update the codes"


def test_schedulers_step_per_iteration() -> None:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sch = build_scheduler(opt, {"name": "multistep", "milestones": [2, 4], "gamma": 0.1}, 0)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    opt2 = torch.optim.Adam([p], lr=1.0)
    sch2 = build_scheduler(opt2, {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.0}, 10)
    seen = []
    for _ in range(10):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sch2.step()
    assert seen[0] == pytest.approx(0.5) and seen[1] == pytest.approx(1.0) and seen[-1] < 0.05
    with pytest.raises(Exception, match="unknown lr_scheduler"):
        build_scheduler(opt, {"name": "sawtooth"}, 10)


def test_rng_state_roundtrip_is_exact() -> None:
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    state = capture_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(100)
    random.random()
    np.random.rand(7)
    restore_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


class _Stage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def ema_module(self) -> nn.Module:
        return self


def test_ema_callback_averages_trainable_weights_and_swaps() -> None:
    stage = _Stage()
    ema = EMAWeights(decay=0.9)
    trainer = SimpleNamespace(global_step=0, sanity_checking=False)
    ema.on_fit_start(trainer, stage)  # type: ignore[arg-type]
    assert "frozen.weight" not in ema.shadow
    old = stage.net.weight.detach().clone()
    with torch.no_grad():
        stage.net.weight.add_(1.0)
    trainer.global_step = 1
    ema.on_train_batch_end(trainer, stage)  # type: ignore[arg-type]
    assert torch.allclose(ema.shadow["net.weight"], 0.9 * old + 0.1 * (old + 1.0))
    ema.on_train_batch_end(trainer, stage)  # same global step (accumulating): no update
    assert torch.allclose(ema.shadow["net.weight"], 0.9 * old + 0.1 * (old + 1.0))
    live = stage.net.weight.detach().clone()
    with ema.applied(stage):  # type: ignore[arg-type]
        assert torch.allclose(stage.net.weight, ema.shadow["net.weight"])
    assert torch.equal(stage.net.weight, live)
    restored = EMAWeights(decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.shadow["net.weight"], ema.shadow["net.weight"])
