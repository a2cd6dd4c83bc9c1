"""PSNR/SSIM against independent numpy formulas written here; identical images; conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daefr.metrics.fidelity import psnr, rgb_to_y, ssim


def _pair(seed: int, shape: tuple[int, int, int] = (40, 48, 3), noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = np.stack([(xx * 5 + c * 30 + yy * 2) % 256 for c in range(3)], axis=-1).astype(np.float64)
    gt = np.clip(base + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)
    restored = np.clip(gt.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return restored, gt


def _np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def _np_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    # Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), 'valid' filtering.
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)

    def filt(x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        out = np.empty((h - 10, w - 10))
        for i in range(h - 10):
            for j in range(w - 10):
                out[i, j] = np.sum(x[i : i + 11, j : j + 11] * win)
        return out

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def _np_ssim(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if a64.ndim == 2:
        return _np_ssim_channel(a64, b64)
    return float(np.mean([_np_ssim_channel(a64[..., c], b64[..., c]) for c in range(a.shape[2])]))


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_ssim_match_numpy(seed: int) -> None:
    restored, gt = _pair(seed)
    assert psnr(restored, gt) == pytest.approx(_np_psnr(restored, gt), abs=1e-4)
    assert ssim(restored, gt) == pytest.approx(_np_ssim(restored, gt), abs=1e-4)


def test_y_channel_and_crop_border_match_numpy() -> None:
    restored, gt = _pair(2)
    # MATLAB rgb2ycbcr luma, written independently: Y = 16 + [65.481, 128.553, 24.966] . rgb / 255
    coeffs = np.array([65.481, 128.553, 24.966]) / 255.0
    ya, yb = 16 + restored.astype(np.float64) @ coeffs, 16 + gt.astype(np.float64) @ coeffs
    assert np.allclose(rgb_to_y(restored), ya)
    assert psnr(restored, gt, y_channel=True) == pytest.approx(
        10 * math.log10(255.0**2 / np.mean((ya - yb) ** 2)), abs=1e-4
    )
    c = 4
    assert ssim(restored, gt, crop_border=c, y_channel=True) == pytest.approx(
        _np_ssim(ya[c:-c, c:-c], yb[c:-c, c:-c]), abs=1e-4
    )
    assert psnr(restored, gt, crop_border=c) == pytest.approx(
        _np_psnr(restored[c:-c, c:-c], gt[c:-c, c:-c]), abs=1e-4
    )


def test_identical_images() -> None:
    _, gt = _pair(3)
    assert psnr(gt, gt) == math.inf
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_size_mismatch_is_an_error() -> None:
    a, b = _pair(4)
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(a, b[:-1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], b[:8, :8])
