"""Batched blur kernels: isotropic / anisotropic Gaussian, generalized Gaussian and plateau.

Every kernel is defined by a quadratic form ``q(x, y) = u^2 / sigma_x^2 + v^2 / sigma_y^2`` of the
offset rotated by ``theta`` (``u = cos*x + sin*y``, ``v = -sin*x + cos*y``, i.e. the covariance
``R diag(sx^2, sy^2) R^T``), then a profile of ``q``:

- Gaussian: ``exp(-q / 2)``;
- generalized Gaussian: ``exp(-q^beta / 2)``;
- plateau: ``1 / (1 + q^beta)``.

Offsets run over ``-(k // 2) .. k // 2`` on both axes (x along columns, y along rows), kernels are
normalised to sum 1. Kernels of several sizes share one ``(B, K, K)`` tensor: a smaller kernel is the
centre of a zero border, which leaves a convolution unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
"""Kernel type names; a sample's ``kernel_type`` parameter is an index into this tuple."""

_GENERALIZED = (2, 3)
_PLATEAU = (4, 5)
ISOTROPIC_TYPES: tuple[int, ...] = (0, 2, 4)


def kernel_type_index(names: Sequence[str]) -> list[int]:
    """Indices of kernel type ``names`` in :data:`KERNEL_TYPES`; unknown names raise ValueError."""
    out = []
    for name in names:
        if name not in KERNEL_TYPES:
            raise ValueError(f"unknown kernel type {name!r}; choose from {', '.join(KERNEL_TYPES)}")
        out.append(KERNEL_TYPES.index(name))
    return out


def mixed_kernels(
    kernel_type: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    kernel_size: Tensor,
    max_size: int | None = None,
) -> Tensor:
    """Per-sample kernels ``(B, K, K)`` float32 summing to 1, from ``(B,)`` parameter tensors.

    ``kernel_type`` indexes :data:`KERNEL_TYPES`; ``beta`` is used by generalized and plateau types
    only; ``kernel_size`` (odd) may differ per sample, ``K`` is ``max_size`` or the largest size.
    """
    device = sigma_x.device
    sizes = kernel_size.to(device=device, dtype=torch.long)
    if bool((sizes % 2 == 0).any()) or bool((sizes < 1).any()):
        raise ValueError(f"kernel sizes must be odd and positive, got {sizes.tolist()}")
    big = int(sizes.max()) if max_size is None else int(max_size)
    if big < int(sizes.max()):
        raise ValueError(f"max_size {big} is smaller than the largest kernel size {int(sizes.max())}")
    half = big // 2
    ax = torch.arange(-half, half + 1, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # yy along rows, xx along columns

    def col(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=torch.float32).reshape(-1, 1, 1)

    cos, sin = torch.cos(col(theta)), torch.sin(col(theta))
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    q = (u / col(sigma_x)) ** 2 + (v / col(sigma_y)) ** 2
    ktype = col(kernel_type)
    b = col(beta)
    gaussian = torch.exp(-0.5 * q)
    generalized = torch.exp(-0.5 * q.pow(b))
    plateau = 1.0 / (q.pow(b) + 1.0)
    is_gen = (ktype == _GENERALIZED[0]) | (ktype == _GENERALIZED[1])
    is_plat = (ktype == _PLATEAU[0]) | (ktype == _PLATEAU[1])
    kernel = torch.where(is_gen, generalized, torch.where(is_plat, plateau, gaussian))
    # a kernel smaller than K keeps only its own support; the rest is a zero border
    radius = (sizes // 2).to(torch.float32).reshape(-1, 1, 1)
    inside = (xx.abs() <= radius) & (yy.abs() <= radius)
    kernel = kernel * inside
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)
