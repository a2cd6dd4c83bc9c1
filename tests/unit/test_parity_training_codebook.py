"""Training parity of ``CodebookStage`` with the official codebook stage (``codebook_step`` fixture).

Runs our stage through a Lightning Trainer (the ``daefr fit`` loop) on the fixture's two batches and
compares losses, gradients, updates, BatchNorm buffers and Adam state (see
:mod:`daefr.testing.training_parity` and the fixture README for the tolerances).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from daefr.testing import training_parity as tp

NAME = "codebook_step"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    torch.set_num_threads(1)  # the fixtures' condition (and no thread thrashing on small CPUs)
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
    official = [g["num_params"] for g in fixture.meta["optimizers"][0]["param_groups"]]  # 157 + 36 here
    assert [len(g["params"]) for g in record.optimizers[0].param_groups] == official
    assert all(g["lr"] == fixture.lr for opt in record.optimizers for g in opt.param_groups)


def test_every_logged_loss_before_and_after_disc_start(run: tuple) -> None:
    fixture, _, record = run
    _no_failures(tp.check_logged(fixture, record))
    # iteration 0 is before disc_start (GAN evaluated, multiplied by 0), iteration 1 after it
    assert float(record.logs[0]["train/disc_factor"]) == 0.0 and float(record.logs[0]["train/d_weight"]) > 0
    assert float(record.logs[0]["train/disc_loss"]) == 0.0
    assert float(record.logs[1]["train/disc_factor"]) == 1.0 and float(record.logs[1]["train/disc_loss"]) > 0


def test_reconstructions_and_logit_maps_of_every_forward_pass(run: tuple) -> None:
    """One forward pass per optimizer (official): each reconstruction / PatchGAN map within 3e-3 max|x|."""
    _no_failures(tp.check_outputs(*run))


def test_gradient_checksums_and_named_full_gradients(run: tuple) -> None:
    _no_failures(tp.check_gradients(*run))


def test_parameters_buffers_and_adam_state_after_each_iteration(run: tuple) -> None:
    _no_failures(tp.check_after(*run))


def test_lpips_dropout_active_in_every_generator_step(run: tuple) -> None:
    _, under_test, _ = run  # each head drew exactly the official masks of step 0 and step 1, in train mode
    assert under_test.stage.loss.perceptual.training
    assert [d.used for d in under_test.dropouts] == [2] * 5 and not any(d.masks for d in under_test.dropouts)


def test_lpips_and_unused_parameters_never_move(run: tuple) -> None:
    fixture, under_test, record = run
    for key in fixture.iterations[-1]["after"]["unchanged"]:
        ours = under_test.names[key]
        assert torch.equal(record.after[-1][ours], record.before[0][ours]), key
    lpips = [k for k in fixture.meta["state_dict"] if k.startswith("loss.perceptual_loss.net.")]
    assert lpips and all(k in fixture.iterations[-1]["after"]["unchanged"] for k in lpips)


def test_without_official_quirks_the_discriminator_deviates(repo_root: Path, run: tuple) -> None:
    """``official_quirks: false`` (one forward, no discriminator before disc_start, LPIPS in eval) is measurably
    different: the checks must catch it (so they can fail) while the generator's first step still matches."""
    fixture, _, _ = run
    failures = tp.all_failures(*tp.run_fixture(fixture.dir, NAME, official_quirks=False))
    assert any("opt1" in f and "did not step" in f for f in failures["gradients"])
    assert any("num_batches_tracked" in f for f in failures["after"])
    assert any("it0.opt0 train/p_loss" in f for f in failures["logged"])  # LPIPS dropout off changes p_loss
    assert not failures["optimizers"] and not failures["initial weights"]


def test_fixture_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    repo_root: Path) -> None:
    monkeypatch.setenv(tp.ENV_VAR, str(tmp_path))
    assert tp.training_parity_dir(repo_root) == tmp_path
    monkeypatch.delenv(tp.ENV_VAR)
    assert tp.training_parity_dir(repo_root) == repo_root.resolve().parent / "shared" / "parity" / "training"
