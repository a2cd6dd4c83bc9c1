"""Sampled degradation parameters follow the configured distributions (statistical tests, many draws)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from daefr.data.degradation import KERNEL_TYPES, Degradation, daefr_large, gfpgan, ops

N = 4000
P_MIN = 1e-3  # a correct sampler fails a single test with this probability


@pytest.fixture(scope="module")
def large() -> tuple[Degradation, dict[str, torch.Tensor]]:
    module = daefr_large()
    return module, module.sample_params(N, 512, 512, torch.Generator().manual_seed(7))


def _ks_uniform(values: torch.Tensor, lo: float, hi: float) -> float:
    return float(stats.kstest(values.double().numpy(), "uniform", args=(lo, hi - lo)).pvalue)


def test_continuous_parameters_are_uniform_on_their_ranges(large) -> None:
    module, p = large
    aniso = p["kernel_type"] == KERNEL_TYPES.index("aniso")
    for key, values, (lo, hi) in [
        ("sigma_x", p["sigma_x"], module.sigma_range),
        ("sigma_y (aniso)", p["sigma_y"][aniso], module.sigma_range),
        ("theta (aniso)", p["theta"][aniso], module.rotation_range),
        ("scale", p["scale"], module.scale_range),
        ("noise_sigma", p["noise_sigma"], module.noise_range),
    ]:
        assert float(values.min()) >= lo and float(values.max()) <= hi, key
        assert _ks_uniform(values, lo, hi) > P_MIN, key
    # and a wrong range is detected by the same test
    assert _ks_uniform(p["sigma_x"], 0.1, 10.0) < P_MIN


def test_discrete_parameters(large) -> None:
    module, p = large
    kinds = p["kernel_type"]
    n_iso = int((kinds == KERNEL_TYPES.index("iso")).sum())
    assert set(kinds.tolist()) == {KERNEL_TYPES.index("iso"), KERNEL_TYPES.index("aniso")}
    assert stats.binomtest(n_iso, N, 0.5).pvalue > P_MIN
    sizes = p["kernel_size"]
    assert set(sizes.tolist()) == {39, 41}
    assert stats.binomtest(int((sizes == 41).sum()), N, 0.5).pvalue > P_MIN
    q = p["jpeg_quality"]
    lo, hi = int(module.jpeg_range[0]), int(module.jpeg_range[1])
    # floor of a uniform draw, as the official code: every integer in [lo, hi) equally likely
    assert int(q.min()) == lo and int(q.max()) == hi - 1
    counts = np.bincount(q.numpy() - lo, minlength=hi - lo)
    assert stats.chisquare(counts).pvalue > P_MIN


def test_isotropic_kernels_have_equal_axes_and_no_rotation(large) -> None:
    _, p = large
    iso = p["kernel_type"] == KERNEL_TYPES.index("iso")
    assert torch.equal(p["sigma_x"][iso], p["sigma_y"][iso])
    assert torch.all(p["theta"][iso] == 0)
    assert not torch.equal(p["sigma_x"][~iso], p["sigma_y"][~iso])


def test_lq_sizes_follow_scale(large) -> None:
    _, p = large
    h, w = ops.lq_sizes(512, 512, p["scale"])
    assert torch.equal(h, p["lq_height"]) and torch.equal(w, p["lq_width"])
    expected = torch.tensor([max(1, int(512 // float(s))) for s in p["scale"][:200]])
    assert torch.equal(p["lq_height"][:200], expected)


def test_colour_jitter_and_gray_probabilities() -> None:
    module = gfpgan()
    p = module.sample_params(N, 64, 64, torch.Generator().manual_seed(3))
    shifted = (p["color_shift"] != 0).any(dim=1)
    assert stats.binomtest(int(shifted.sum()), N, 0.3).pvalue > P_MIN
    assert float(p["color_shift"].abs().max()) <= 20.0 / 255.0 + 1e-7
    assert _ks_uniform(p["color_shift"][shifted].flatten() * 255.0, -20.0, 20.0) > P_MIN
    assert stats.binomtest(int(p["gray"].sum()), N, 0.01).pvalue > P_MIN
    assert not p["poisson"].any()


def test_kernel_mixture_and_beta_ranges() -> None:
    module = Degradation(kernel_list=("generalized_aniso", "plateau_iso"), kernel_prob=(0.25, 0.75),
                         betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), poisson_prob=0.5)
    p = module.sample_params(N, 64, 64, torch.Generator().manual_seed(5))
    plateau = p["kernel_type"] == KERNEL_TYPES.index("plateau_iso")
    assert stats.binomtest(int(plateau.sum()), N, 0.75).pvalue > P_MIN
    assert _ks_uniform(p["beta"][plateau], 1.0, 2.0) > P_MIN
    assert _ks_uniform(p["beta"][~plateau], 0.5, 4.0) > P_MIN
    assert stats.binomtest(int(p["poisson"].sum()), N, 0.5).pvalue > P_MIN
    assert math.isclose(float(p["theta"][plateau].abs().max()), 0.0)


def test_same_generator_seed_same_parameters() -> None:
    module = daefr_large()
    a = module.sample_params(8, 64, 64, torch.Generator().manual_seed(11))
    b = module.sample_params(8, 64, 64, torch.Generator().manual_seed(11))
    c = module.sample_params(8, 64, 64, torch.Generator().manual_seed(12))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["sigma_x"], c["sigma_x"])
