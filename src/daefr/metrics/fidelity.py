"""Full-reference fidelity metrics on 8-bit RGB images: PSNR and SSIM (torchmetrics).

Conventions (the ones of the face-restoration literature, so numbers compare with published tables):
images are 8-bit RGB, values used as float in [0, 255] with ``data_range=255``; ``crop_border`` pixels
are removed on each side (default 0); SSIM uses an 11x11 Gaussian window, sigma 1.5, K1=0.01,
K2=0.03, computed on the 'valid' region and averaged over channels; with ``y_channel=True`` both metrics
use the BT.601 luma Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB ``rgb2ycbcr``).
Computation is in float64. PSNR of identical images is ``inf``.
"""

from __future__ import annotations

import numpy as np
import torch


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB values in [0, 255] -> (H, W) BT.601 luma in [16, 235] (float64)."""
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _prepare(image: np.ndarray, crop_border: int, y_channel: bool) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    arr = rgb_to_y(image)[..., None] if y_channel else image.astype(np.float64)
    if crop_border:
        arr = arr[crop_border:-crop_border, crop_border:-crop_border]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]


def _check_pair(restored: np.ndarray, reference: np.ndarray) -> None:
    if restored.shape != reference.shape:
        raise ValueError(f"image sizes differ: restored {restored.shape} vs reference {reference.shape}")


def psnr(restored: np.ndarray, reference: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB between two (H, W, 3) uint8 RGB images; ``inf`` when they are identical."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(restored, reference)
    a = _prepare(restored, crop_border, y_channel)
    b = _prepare(reference, crop_border, y_channel)
    if torch.equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255.0))


def ssim(restored: np.ndarray, reference: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM between two (H, W, 3) uint8 RGB images (Gaussian 11x11, sigma 1.5, valid region); 1 if identical."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(restored, reference)
    a = _prepare(restored, crop_border, y_channel)
    b = _prepare(reference, crop_border, y_channel)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels after cropping, got {tuple(a.shape[-2:])}")
    _, ssim_map = structural_similarity_index_measure(
        a, b, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0, k1=0.01, k2=0.03,
        return_full_image=True,
    )
    # torchmetrics averages over a reflect-padded map; the published convention (Wang et al. MATLAB
    # code, skimage, BasicSR) averages the 'valid' region only, i.e. 5 pixels in from every border.
    return float(ssim_map[..., 5:-5, 5:-5].mean())  # type: ignore[index]
