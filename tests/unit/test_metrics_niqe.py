"""NIQE: AGGD fitting on known distributions, features, parameter files, and score ordering."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from daefr.errors import ConfigError, WeightsNotFoundError
from daefr.metrics.niqe import (
    aggd_fit,
    fit_niqe_params,
    load_niqe_params,
    niqe,
    niqe_features,
    save_niqe_params,
)


@pytest.mark.parametrize(("sampler", "alpha"), [("normal", 2.0), ("laplace", 1.0)])
def test_aggd_fit_recovers_shape(sampler: str, alpha: float) -> None:
    rng = np.random.default_rng(0)
    x = getattr(rng, sampler)(0.0, 1.5, 200_000)
    a, left, right = aggd_fit(x)
    assert a == pytest.approx(alpha, abs=0.06)
    # symmetric: equal left/right scales; scale = std * sqrt(G(1/a)/G(3/a))
    expected = x.std() * math.sqrt(math.gamma(1 / a) / math.gamma(3 / a))
    assert left == pytest.approx(right, rel=0.02) and left == pytest.approx(expected, rel=0.03)


def _natural(seed: int, size: int = 192) -> np.ndarray:
    # smooth random field with edges: a stand-in for a pristine photo
    rng = np.random.default_rng(seed)
    from PIL import Image

    small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)).astype(float)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def test_features_and_score_ordering(tmp_path: Path) -> None:
    pristine = [_natural(s) for s in range(3)]
    feats, sharp = niqe_features(pristine[0], block_size=64)
    assert feats.shape == (9, 36) and sharp.shape == (9,)
    mu, cov = fit_niqe_params(pristine, block_size=64)
    assert mu.shape == (36,) and cov.shape == (36, 36)
    clean = _natural(10)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 30, clean.shape), 0, 255).astype(np.uint8)
    assert niqe(clean, mu, cov, block_size=64) < niqe(noisy, mu, cov, block_size=64)
    save_niqe_params(tmp_path / "mine.npz", mu, cov)
    mu2, cov2 = load_niqe_params(tmp_path / "mine.npz")
    assert np.array_equal(mu, mu2) and np.array_equal(cov, cov2)
    with pytest.raises(ValueError, match="at least 64x64"):
        niqe_features(clean[:40, :40], block_size=64)


def test_parameter_file_formats_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mu, cov = np.arange(36.0), np.eye(36)
    np.savez(tmp_path / "basicsr.npz", mu_pris_param=mu[None], cov_pris_param=cov, gaussian_window=np.ones((7, 7)))
    got_mu, got_cov = load_niqe_params(tmp_path / "basicsr.npz")
    assert np.array_equal(got_mu, mu) and np.array_equal(got_cov, cov)
    from scipy.io import savemat

    savemat(tmp_path / "modelparameters.mat", {"mu_prisparam": mu[None], "cov_prisparam": cov})
    assert np.array_equal(load_niqe_params(tmp_path / "modelparameters.mat")[0], mu)
    np.savez(tmp_path / "wrong.npz", mu=mu[:10], cov=cov)
    with pytest.raises(ConfigError, match=r"mu \(36,\)"):
        load_niqe_params(tmp_path / "wrong.npz")
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match=r"niqe_pris_params\.npz"):
        load_niqe_params()
