"""Conformance check for ``degradations`` components (built-in or plugin): run it in your tests.

The contract: ``module(hq, generator=None)`` takes ``(B, 3, H, W)`` images in [0, 1] (float32 or
bfloat16, any memory layout) and returns an object with ``lq`` (same shape and dtype, in [0, 1], on
8-bit levels) and ``params`` (a dict of per-sample tensors, first dimension ``B``); the same seeded
generator gives the same result; the input is never modified; ``replay(hq, params)``, when the
module has it, reproduces ``lq`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_degradation", "is_8bit"]


def is_8bit(img: Tensor, atol: float = 1e-5) -> bool:
    """True when every value of float32 ``img`` is within ``atol`` of a level ``k / 255``."""
    scaled = img.to(torch.float32) * 255.0
    return bool(torch.all((scaled - torch.round(scaled)).abs() <= atol * 255.0))


def _make_input(batch: int, size: int, seed: int, device: torch.device) -> Tensor:
    """Smooth random colour images with edges, ``(B, 3, size, size)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 6, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    img[:, :, size // 3 : size // 2, :] += 0.3  # a sharp band, so blur and JPEG have work to do
    return img.clamp(0.0, 1.0).to(device)


def _run(module: Callable[..., Any], hq: Tensor, seed: int) -> Any:
    g = torch.Generator().manual_seed(seed)
    return module(hq, generator=g)


def check_degradation(
    module: Callable[..., Any], *, batch: int = 3, size: int = 48, device: str | torch.device = "cpu",
    seed: int = 0,
) -> None:
    """Assert that ``module`` honours the degradation contract; raises AssertionError naming the rule broken.

    ``size`` must be large enough for the module's kernels (48 covers 41x41 kernels with reflect borders).
    """
    dev = torch.device(device)
    hq = _make_input(batch, size, seed, dev)
    before = hq.clone()
    out = _run(module, hq, seed)
    assert torch.equal(hq, before), "the degradation modified its input in place"
    lq, params = getattr(out, "lq", None), getattr(out, "params", None)
    assert isinstance(lq, Tensor), f"output must have a tensor .lq, got {type(out).__name__}"
    assert isinstance(params, dict), "output must have a dict .params of per-sample tensors"
    assert lq.shape == hq.shape, f"lq shape {tuple(lq.shape)} != input shape {tuple(hq.shape)}"
    assert lq.dtype == hq.dtype, f"lq dtype {lq.dtype} != input dtype {hq.dtype}"
    assert lq.device == hq.device, f"lq is on {lq.device}, input on {hq.device}"
    assert torch.isfinite(lq).all(), "lq has NaN or inf values"
    assert float(lq.min()) >= 0.0 and float(lq.max()) <= 1.0, "lq must lie in [0, 1]"
    assert is_8bit(lq), "lq values must be 8-bit levels k / 255"
    for key, value in params.items():
        assert isinstance(value, Tensor), f"params[{key!r}] must be a tensor, got {type(value).__name__}"
        assert value.ndim >= 1 and value.shape[0] == batch, (
            f"params[{key!r}] must have the batch size {batch} first, got shape {tuple(value.shape)}")
    assert not torch.equal(lq, hq), "lq equals hq: nothing was degraded"

    again = _run(module, hq, seed)
    assert torch.equal(again.lq, lq), "the same seed gave a different lq"
    for key, value in params.items():
        assert torch.equal(again.params[key], value), f"the same seed gave different params[{key!r}]"
    other = _run(module, hq, seed + 1)
    assert not torch.equal(other.lq, lq), "different seeds gave identical outputs"

    # non-contiguous views and other memory layouts of the same images must give the same result
    strided = torch.stack([hq, hq], dim=-1)[..., 0]
    assert not strided.is_contiguous()
    assert torch.equal(_run(module, strided, seed).lq, lq), "non-contiguous input changed the result"
    channels_last = hq.contiguous(memory_format=torch.channels_last)
    assert torch.equal(_run(module, channels_last, seed).lq, lq), "channels_last input changed the result"

    low = hq.to(torch.bfloat16)
    out_bf16 = _run(module, low, seed)
    assert out_bf16.lq.dtype == torch.bfloat16, f"bfloat16 input gave {out_bf16.lq.dtype} output"
    assert out_bf16.lq.shape == hq.shape
    assert float(out_bf16.lq.float().min()) >= 0.0 and float(out_bf16.lq.float().max()) <= 1.0

    replay = getattr(module, "replay", None)
    if callable(replay):
        replayed = replay(hq, params)
        assert torch.equal(replayed.lq, lq), "replay(hq, params) did not reproduce lq"
