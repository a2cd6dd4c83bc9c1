"""Frechet Inception Distance: pool3 statistics, the Frechet distance, and reference statistics files.

Reference statistics are ``.npz`` files with arrays ``mu`` (2048,) and ``sigma`` (2048, 2048), the
format pytorch-fid writes with ``--save-stats``; a folder of reference images works as well.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from daefr.errors import ConfigError, WeightsNotFoundError
from daefr.metrics.inception import FIDInceptionV3


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), float64 (unbiased covariance, N >= 2)."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors, got array of shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) for Gaussians fitted to two feature sets."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    # Tr((S1 S2)^1/2) = Tr((A S2 A)^1/2) with A = S1^1/2; A S2 A is symmetric PSD, so its square root's
    # trace is the sum of the square roots of its eigenvalues: stable even for singular covariances.
    w1, v1 = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance_features(
    features: np.ndarray,
    reference_features: np.ndarray | None = None,
    reference_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """FID of (N, D) features against reference features (M, D) or reference (mu, sigma).

    Same value as :func:`frechet_distance` on the fitted statistics, but with N (and M) below D the
    covariances have rank < N, and Tr((S1 S2)^1/2) is computed from N x N (or N x M) matrices:
    with S = A^T A (A = centred features / sqrt(N - 1)), the non-zero eigenvalues of S1 S2 are those of
    A1 S2 A1^T, and for two sample sets their square roots are the singular values of A1 A2^T.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors, got array of shape {x.shape}")
    mu1 = x.mean(axis=0)
    a1 = (x - mu1) / math.sqrt(x.shape[0] - 1)
    if reference_features is not None:
        y = np.asarray(reference_features, np.float64)
        if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] != x.shape[1]:
            raise ValueError(f"reference features must be (M >= 2, {x.shape[1]}), got {y.shape}")
        if min(x.shape[0], y.shape[0]) >= x.shape[1]:
            return frechet_distance(*statistics(x), *statistics(y))
        mu2 = y.mean(axis=0)
        a2 = (y - mu2) / math.sqrt(y.shape[0] - 1)
        tr_covmean = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
        tr2 = float((a2 * a2).sum())
    elif reference_stats is not None:
        mu2, s2 = (np.asarray(v, np.float64) for v in reference_stats)
        if mu2.shape != mu1.shape or s2.shape != (mu1.size, mu1.size):
            raise ValueError(f"reference statistics have shapes {mu2.shape}, {s2.shape}; features have D={mu1.size}")
        if x.shape[0] >= x.shape[1]:
            return frechet_distance(*statistics(x), mu2, s2)
        middle = a1 @ s2 @ a1.T
        eig = np.linalg.eigvalsh((middle + middle.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
        tr2 = float(np.trace(s2))
    else:
        raise ValueError("pass reference_features or reference_stats")
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() + tr2 - 2 * tr_covmean)


def save_statistics(path: str | os.PathLike[str], mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu``/``sigma`` to an ``.npz`` file atomically."""
    from daefr.utils.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, mu=mu, sigma=sigma)


def load_statistics(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``mu``/``sigma`` from an ``.npz`` reference statistics file."""
    file = Path(path)
    if not file.is_file():
        raise WeightsNotFoundError(
            f"FID reference statistics {str(file)!r} not found: pass an .npz with 'mu' and 'sigma' "
            "(e.g. written by `daefr evaluate --fid-save-stats` or pytorch-fid --save-stats) or a folder of images"
        )
    with np.load(file) as data:
        if "mu" not in data or "sigma" not in data:
            raise ConfigError(f"{str(file)!r} lacks 'mu'/'sigma' arrays (has {sorted(data.keys())})")
        return np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)


class FeatureAccumulator:
    """Collects pool3 features image by image, running the network on batches of same-sized images.

    Only features are kept (2048 floats per image), so a large test set never sits in memory.
    """

    def __init__(self, model: FIDInceptionV3, batch_size: int = 16, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device)
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self._batch: list[np.ndarray] = []
        self._out: list[np.ndarray] = []

    @torch.no_grad()
    def _flush(self) -> None:
        if self._batch:
            x = torch.from_numpy(np.stack(self._batch)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
            self._out.append(self.model(x).double().cpu().numpy())
            self._batch.clear()

    def add(self, image: np.ndarray) -> None:
        """Queue one (H, W, 3) uint8 RGB image."""
        if self._batch and (image.shape != self._batch[0].shape or len(self._batch) == self.batch_size):
            self._flush()
        self._batch.append(image)

    def features(self) -> np.ndarray:
        """(N, 2048) features of every image added so far."""
        self._flush()
        if not self._out:
            raise ValueError("no images to compute Inception features of")
        return np.concatenate(self._out)


def inception_features(
    model: FIDInceptionV3, images: Iterable[np.ndarray], batch_size: int = 16, device: str | torch.device = "cpu"
) -> np.ndarray:
    """(H, W, 3) uint8 RGB images -> (N, 2048) pool3 features (consecutive same-sized images batched)."""
    acc = FeatureAccumulator(model, batch_size, device)
    for image in images:
        acc.add(image)
    return acc.features()


def reference_features_or_statistics(
    reference: str | os.PathLike[str], model: FIDInceptionV3, batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
    """(features, None) for a folder of reference images, (None, (mu, sigma)) for an ``.npz`` file."""
    ref = Path(reference)
    if ref.is_dir():
        from daefr.metrics.images import list_images, read_rgb8

        return inception_features(model, (read_rgb8(f) for f in list_images(ref)), batch_size, device), None
    return None, load_statistics(ref)


def reference_statistics(
    reference: str | os.PathLike[str], model: FIDInceptionV3, batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of a reference: an ``.npz`` file, or a folder of images (features computed here)."""
    ref = Path(reference)
    if ref.is_dir():
        from daefr.metrics.images import list_images, read_rgb8

        files: Sequence[Path] = list_images(ref)
        return statistics(inception_features(model, (read_rgb8(f) for f in files), batch_size, device))
    return load_statistics(ref)
