"""Training parity of ``RestorationStage`` with the official final stage (``restoration_step`` fixture).

One optimizer, one iteration: ``BCE + 10 * L2``, 282 trained tensors, 195 left out of the optimizer; see
:mod:`daefr.testing.training_parity`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from daefr.testing import training_parity as tp

NAME = "restoration_step"


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


def test_optimizer_holds_the_official_282_tensors(run: tuple) -> None:
    fixture, under_test, record = run
    _no_failures(tp.check_optimizers(fixture, under_test, record) + tp.check_order(fixture, under_test, record))
    official = [g["num_params"] for g in fixture.meta["optimizers"][0]["param_groups"]]  # [282] here
    assert [len(g["params"]) for g in record.optimizers[0].param_groups] == official
    assert not record.optimizers[0].param_groups[0]["weight_decay"]


def test_logged_losses(run: tuple) -> None:
    fixture, _, record = run
    _no_failures(tp.check_logged(fixture, record))
    logs = record.logs[0]
    assert float(logs["train/loss"]) == float(logs["train/ce_loss"] + 10 * logs["train/l2_loss"])


def test_reconstructions_and_logit_maps_of_every_forward_pass(run: tuple) -> None:
    """One forward pass per optimizer (official): each reconstruction / PatchGAN map within 3e-3 max|x|."""
    _no_failures(tp.check_outputs(*run))


def test_gradient_checksums_and_named_full_gradients(run: tuple) -> None:
    _no_failures(tp.check_gradients(*run))


def test_parameters_after_the_step_and_frozen_modules_unchanged(run: tuple) -> None:
    fixture, under_test, record = run
    _no_failures(tp.check_after(fixture, under_test, record))
    frozen = fixture.meta["params_in_no_optimizer"]
    keys = [k for k in fixture.meta["state_dict"] if k.startswith(tuple(f"{p}." for p in frozen["prefix_counts"]))]
    assert len(keys) == sum(frozen["prefix_counts"].values())  # 195 here
    for key in keys:
        ours = under_test.names[key]
        assert torch.equal(record.after[0][ours], record.before[0][ours]), key
