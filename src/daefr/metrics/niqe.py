"""NIQE (Mittal et al. 2013): no-reference quality from natural-scene statistics.

The quality is the distance of natural-scene statistics to a
pristine multivariate Gaussian model.

The pristine model (mean ``mu`` (36,) and covariance ``cov`` (36, 36)) is NOT bundled: its published
form is MATLAB's ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``) and BasicSR's
``niqe_pris_params.npz`` (``mu_pris_param``, ``cov_pris_param``); pass either file (``.mat`` needs
scipy), or an ``.npz`` with ``mu``/``cov`` fitted by :func:`fit_niqe_params` on your own pristine images.

Features (36 per block): on the luma channel (BT.601 Y in [16, 235], as BasicSR does), MSCN
coefficients with a 7x7 Gaussian (sigma 7/6, replicate borders); per 96x96 block the AGGD fit of the
MSCN (shape, mean variance) and of its four neighbour products (shape, mean, left/right variances);
then the same at half resolution (bicubic, antialiased) on 48x48 blocks. Deviation from MATLAB: the
half-resolution image comes from PIL's antialiased bicubic resize, not MATLAB ``imresize``, so scores
can differ from MATLAB's in the second decimal.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from daefr.errors import ConfigError
from daefr.metrics.fidelity import rgb_to_y
from daefr.utils.weights import resolve_weights

NIQE_FILE = "niqe_pris_params.npz"
NIQE_SOURCE = (
    "BasicSR (basicsr/metrics/niqe_pris_params.npz) or MATLAB's NIQE release (modelparameters.mat); "
    "or fit your own with daefr.metrics.niqe.fit_niqe_params"
)
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def _gamma_table() -> tuple[np.ndarray, np.ndarray]:
    shapes = np.arange(0.2, 10.001, 0.001)
    lg = np.vectorize(math.lgamma)
    ratio = np.exp(2 * lg(2 / shapes) - lg(1 / shapes) - lg(3 / shapes))
    return shapes, ratio


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching: (shape alpha, left std, right std)."""
    x = x.ravel()
    left, right = x[x < 0], x[x > 0]
    left_std = math.sqrt(float(np.mean(left**2))) if left.size else 0.0
    right_std = math.sqrt(float(np.mean(right**2))) if right.size else 0.0
    if left_std == 0 or right_std == 0:
        return float("nan"), left_std, right_std
    gamma_hat = left_std / right_std
    r_hat = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x**2))
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shapes, ratio = _gamma_table()
    alpha = float(shapes[np.argmin((ratio - r_norm) ** 2)])
    scale = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left_std * scale, right_std * scale


def _block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = aggd_fit(block)
    feats = [alpha, (bl + br) / 2]
    for dy, dx in SHIFTS:
        prod = block * np.roll(block, shift=(dy, dx), axis=(0, 1))
        a, pl, pr = aggd_fit(prod)
        mean = (pr - pl) * (math.gamma(2 / a) / math.gamma(1 / a)) if np.isfinite(a) else float("nan")
        feats += [a, mean, pl, pr]
    return feats


def mscn(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float luma -> (MSCN coefficients, local std), Gaussian 7x7 sigma 7/6, replicate borders."""
    ax = np.arange(7) - 3
    g = np.exp(-(ax**2) / (2 * (7 / 6) ** 2))
    win = np.outer(g, g)
    win /= win.sum()
    kernel = torch.from_numpy(win)[None, None]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))[None, None]
    padded = F.pad(torch.cat([x, x * x]).view(2, 1, *image.shape), (3, 3, 3, 3), mode="replicate")
    mu, mu_sq = F.conv2d(padded, kernel)[:, 0].numpy()
    sigma = np.sqrt(np.abs(mu_sq - mu * mu))
    return (image - mu) / (sigma + 1), sigma


def _half(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = image.shape
    img = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(img.resize((w // 2, h // 2), Image.Resampling.BICUBIC), dtype=np.float64)


def _luma(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return rgb_to_y(image)
    return image.astype(np.float64)


def niqe_features(image: np.ndarray, block_size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB (or (H, W) luma) -> (N_blocks, 36) features and (N_blocks,) sharpness."""
    y = _luma(image)
    h, w = (y.shape[0] // block_size) * block_size, (y.shape[1] // block_size) * block_size
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs images of at least {block_size}x{block_size} pixels, got {y.shape[:2]}")
    y = y[:h, :w]
    per_scale = []
    sharpness = None
    for scale, img in enumerate((y, _half(y))):
        coeffs, sigma = mscn(img)
        bs = block_size // (2**scale)
        rows = []
        sharp = []
        for i in range(h // block_size):
            for j in range(w // block_size):
                blk = coeffs[i * bs : (i + 1) * bs, j * bs : (j + 1) * bs]
                rows.append(_block_features(blk))
                sharp.append(float(sigma[i * bs : (i + 1) * bs, j * bs : (j + 1) * bs].mean()))
        per_scale.append(np.array(rows))
        if sharpness is None:
            sharpness = np.array(sharp)
    assert sharpness is not None
    return np.concatenate(per_scale, axis=1), sharpness


def load_niqe_params(path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pristine model (mu (36,), cov (36, 36)) from ``.npz`` (BasicSR or daefr keys) or MATLAB ``.mat``."""
    file = resolve_weights(path, NIQE_FILE, "NIQE pristine model parameters", NIQE_SOURCE)
    if file.suffix == ".mat":
        from scipy.io import loadmat

        data = dict(loadmat(str(file)))
    else:
        with np.load(file) as npz:
            data = {k: npz[k] for k in npz.files}
    for mu_key, cov_key in (("mu", "cov"), ("mu_pris_param", "cov_pris_param"), ("mu_prisparam", "cov_prisparam")):
        if mu_key in data and cov_key in data:
            mu = np.asarray(data[mu_key], np.float64).ravel()
            cov = np.asarray(data[cov_key], np.float64)
            if mu.shape != (36,) or cov.shape != (36, 36):
                raise ConfigError(f"{str(file)!r}: NIQE parameters must be mu (36,) and cov (36, 36), got {mu.shape}, {cov.shape}")
            return mu, cov
    raise ConfigError(f"{str(file)!r} holds no NIQE parameters (keys {sorted(data)}); expected mu/cov arrays")


def niqe(image: np.ndarray, mu_pris: np.ndarray, cov_pris: np.ndarray, block_size: int = 96) -> float:
    """NIQE score of an (H, W, 3) uint8 RGB image (lower is better), against a pristine model."""
    feats, _ = niqe_features(image, block_size)
    feats = feats[np.isfinite(feats).all(axis=1)]
    if feats.shape[0] < 2:
        raise ValueError("NIQE needs at least two blocks with finite statistics (image too small or flat)")
    mu = feats.mean(axis=0)
    cov = np.cov(feats, rowvar=False)
    diff = mu_pris - mu
    inv = np.linalg.pinv((cov_pris + cov) / 2)
    return float(math.sqrt(max(float(diff @ inv @ diff), 0.0)))


def fit_niqe_params(
    images: Iterable[np.ndarray], block_size: int = 96, sharpness_threshold: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a pristine model on natural images: blocks sharper than ``threshold * max`` per image."""
    rows = []
    for image in images:
        feats, sharp = niqe_features(image, block_size)
        keep = (sharp > sharpness_threshold * sharp.max()) & np.isfinite(feats).all(axis=1)
        rows.append(feats[keep])
    all_feats = np.concatenate(rows) if rows else np.zeros((0, 36))
    if all_feats.shape[0] < 2:
        raise ValueError("not enough sharp blocks to fit a NIQE model; use more or larger pristine images")
    return all_feats.mean(axis=0), np.cov(all_feats, rowvar=False)


def save_niqe_params(path: str | os.PathLike[str], mu: np.ndarray, cov: np.ndarray) -> Path:
    """Write a pristine model as ``.npz`` with ``mu``/``cov`` (readable by :func:`load_niqe_params`)."""
    from daefr.utils.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, mu=mu, cov=cov)
    return Path(path)
