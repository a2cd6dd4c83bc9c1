"""Training parity of ``AssociationStage`` with the official association stage (``association_step`` fixture).

Four optimizers per batch in the official order (HQ autoencoder, HQ discriminator, LQ autoencoder, LQ
discriminator), each after its own forward pass; see :mod:`daefr.testing.training_parity`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from daefr.testing import training_parity as tp

NAME = "association_step"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def run(repo_root: Path) -> tuple[tp.TrainingFixture, tp.StageUnderTest, tp.Record]:
    return tp.run_or_skip(repo_root, NAME)


_no_failures = tp.assert_no_failures


def test_recipe_weights_loaded_into_our_stage(run: tuple) -> None:
    _no_failures(tp.check_initial_weights(*run))


def test_optimizer_groups_learning_rates_and_order(run: tuple) -> None:
    fixture, under_test, record = run
    _no_failures(tp.check_optimizers(fixture, under_test, record) + tp.check_order(fixture, under_test, record))
    official = [g["num_params"] for g in fixture.meta["optimizers"][0]["param_groups"]]  # 79 + 114 here
    assert [len(g["params"]) for g in record.optimizers[0].param_groups] == official


def test_every_logged_loss_before_and_after_disc_start(run: tuple) -> None:
    fixture, _, record = run
    _no_failures(tp.check_logged(fixture, record))
    first, second = record.logs
    # the LQ step's CLIP loss is recomputed after the HQ update (official), so it differs from the HQ step's
    assert float(first["train/hq/clip_loss"]) != float(first["train/lq/clip_loss"])
    assert float(first["train/hq/disc_loss"]) == 0.0 and float(second["train/lq/disc_loss"]) > 0


def test_reconstructions_and_logit_maps_of_every_forward_pass(run: tuple) -> None:
    """One forward pass per optimizer (official): each reconstruction / PatchGAN map within 3e-3 max|x|."""
    _no_failures(tp.check_outputs(*run))


def test_gradient_checksums_and_named_full_gradients(run: tuple) -> None:
    _no_failures(tp.check_gradients(*run))


def test_parameters_buffers_and_adam_state_after_each_iteration(run: tuple) -> None:
    _no_failures(tp.check_after(*run))


def test_fixed_temperature_and_frozen_lpips(run: tuple) -> None:
    fixture, under_test, record = run
    stage = under_test.stage
    scale = under_test.names["logit_scale"]
    for state in (*record.before, *record.after):
        assert state[scale].item() == 2.6592600345611572  # float32 log(1/0.07), never trained
    assert scale not in dict(stage.named_parameters())  # ours is a buffer: no optimizer can hold it
    assert all("logit_scale" in it["after"]["unchanged"] for it in fixture.iterations)
    for lpips in (stage.loss_hq.perceptual, stage.loss_lq.perceptual):
        assert lpips.training and not any(p.requires_grad for p in lpips.parameters())
    assert [d.used for d in under_test.dropouts] == [2] * 10


def test_without_official_quirks_the_lq_step_deviates(run: tuple) -> None:
    """One joint forward (``official_quirks: false``): the LQ branch's CLIP gradient is taken before the HQ update."""
    fixture, _, _ = run
    failures = tp.all_failures(*tp.run_fixture(fixture.dir, NAME, official_quirks=False))
    assert any(f.startswith("it0.opt2 train/LQ_aeloss") or f.startswith("it0.opt2 LQ_Associate_loss")
               for f in failures["logged"])
    assert any(f.startswith("it0.opt2 vqvae_LQ.encoder") for f in failures["gradients"])
    assert not failures["optimizers"] and not failures["initial weights"]
