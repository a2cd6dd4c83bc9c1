"""Inference options for the DAEFR restorer: the switch between the parity path and the fast path.

Usage::

    from daefr.models.inference_options import InferenceOptions, optimize_for_inference
    net = optimize_for_inference(restorer, InferenceOptions(fast=True, precision="fp32"))
    restored = net(lq)                       # (B, 3, 512, 512) in [-1, 1] -> same shape, float32

The parity default (``InferenceOptions.parity()``) reproduces the official numerics: it only adds
``torch.inference_mode`` and switches the restorer's fast path off. The fast path (``InferenceOptions()``)
is the restorer's one switch, ``DAEFRRestorer.set_fast(True)``:

* fused attention (``scaled_dot_product_attention``) in every attention block and transformer layer,
  ``argmax`` top-1 codes and direct decoding of the code rows;
* fused ResNet blocks (in-place SiLU and residual) and sub-pixel upsampling (four 2x2 convolutions
  instead of nearest x2 + 3x3: 2.25x fewer FLOPs there), see :mod:`daefr.nn.fast_blocks`;
* in-place final activations in the encoders and the decoder;
* optionally channels-last memory format, ``torch.compile``, and bf16/fp16 autocast (GPU, and bf16 on
  CPUs with native support; the vector quantizer and code choice stay float32).

Restoration never computes training targets, losses or the association codebooks: the
:class:`~daefr.models.restorer.DAEFRRestorer` graph holds only the LQ/HQ encoders, fusion, code
predictor, the HQ codebook (lookup only) and the decoder. Batching of faces is the caller's choice
(``net(batch)``); :class:`daefr.inference.restorer.Restorer` gathers faces across photos.

Deviations of the fast path from the parity path are measured in ``benchmarks/inference.py`` and
checked in ``tests/unit/test_perf_fast_path.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from daefr.errors import ConfigError

__all__ = ["PRECISIONS", "InferenceModel", "InferenceOptions", "cpu_supports", "optimize_for_inference"]

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_supports(precision: str) -> bool:
    """Whether this CPU has native kernels (oneDNN) for ``precision`` (``fp32`` always)."""
    if precision == "fp32":
        return True
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}.get(precision)
    fn = getattr(torch.ops.mkldnn, probe, None) if probe else None
    try:
        return bool(fn()) if fn is not None else False
    except RuntimeError:
        return False


@dataclass(frozen=True)
class InferenceOptions:
    """How the restorer runs at inference time (see the module doc for what each switch does).

    ``fast``: fused attention, argmax, direct decoding, fused blocks, lean encoder (off = parity);
    ``channels_last``: NHWC activations and weights (oneDNN convolutions skip layout reorders);
    ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast (reduced precision is a fast-path option);
    ``compile``: wrap the graph in ``torch.compile`` (first call compiles; pays off for long runs);
    ``inference_mode``: run under ``torch.inference_mode`` (no autograd bookkeeping).
    """

    fast: bool = True
    channels_last: bool = True
    precision: str = "fp32"
    compile: bool = False
    inference_mode: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def parity(cls) -> InferenceOptions:
        """The official numerics: no rewrites, fp32, NCHW, eager (inference mode only)."""
        return cls(fast=False, channels_last=False, precision="fp32", compile=False)

    def replace(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (``torch.float32`` means no autocast)."""
        return PRECISIONS[self.precision]


class InferenceModel(nn.Module):
    """A restorer prepared for inference: ``forward(lq (B, 3, H, W) in [-1, 1])`` -> float32 (B, 3, H, W).

    Holds the restorer (``.restorer``; shared, converted in place by :func:`optimize_for_inference`)
    and its :class:`InferenceOptions` (``.options``). ``input_size`` is the face size it expects.
    Output is NCHW-contiguous float32 whatever the internal layout and precision.
    """

    def __init__(self, restorer: nn.Module, options: InferenceOptions, graph: nn.Module | Any) -> None:
        super().__init__()
        self.restorer = restorer
        self.options = options
        # a plain attribute: the graph shares the restorer's modules, which are registered once (above)
        object.__setattr__(self, "_graph", graph)

    @property
    def input_size(self) -> int | None:
        """Side of the square input (512 for the released model)."""
        size = getattr(self.restorer, "input_size", None)
        return int(size) if isinstance(size, int) else None

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.options.precision == "fp32" or device.type not in ("cpu", "cuda"):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.options.dtype)

    def forward(self, lq: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> restored (B, 3, H, W) float32, unclamped."""
        return self._run(lq, False)[0]

    def forward_with_codes(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) in [-1, 1] -> (restored (B, 3, H, W) float32, top-1 codes (B, T) int64); same cost."""
        restored, indices = self._run(lq, True)
        assert indices is not None
        return restored, indices

    def _run(self, lq: Tensor, with_codes: bool) -> tuple[Tensor, Tensor | None]:
        check = getattr(self.restorer, "check_input", None)
        if callable(check):
            check(lq)
        mode = torch.inference_mode() if self.options.inference_mode else contextlib.nullcontext()
        indices: Tensor | None = None
        with mode, self._autocast(lq.device):
            x = lq.contiguous(memory_format=torch.channels_last) if self.options.channels_last else lq
            graph = cast(Any, self._graph)
            if with_codes:
                details = graph(x, return_details=True)
                y, indices = details["restored"], details["indices"]
            else:
                y = cast(Tensor, graph(x))
        return y.float().contiguous(), indices


def optimize_for_inference(restorer: nn.Module, options: InferenceOptions | None = None,
                           **changes: Any) -> InferenceModel:
    """Prepare ``restorer`` (a :class:`~daefr.models.restorer.DAEFRRestorer`) for inference.

    ``options`` default to the fast path (:class:`InferenceOptions`); ``changes`` override single
    fields, e.g. ``optimize_for_inference(r, precision="bf16")``. The restorer is converted IN PLACE
    (eval mode; ``restorer.set_fast(options.fast)``, reversible; with ``channels_last``: parameters
    re-laid out). Call ``restorer.set_fast(False)`` (or deep-copy it first) to use it as a parity model.
    """
    opts = (options or InferenceOptions()).replace(**changes) if changes else (options or InferenceOptions())
    restorer.eval()
    if opts.precision != "fp32":
        device = next((p.device for p in restorer.parameters()), torch.device("cpu"))
        if device.type == "cpu" and not cpu_supports(opts.precision):
            warnings.warn(f"this CPU has no native {opts.precision} kernels; {opts.precision} autocast will be "
                          "slow (use precision='fp32')", RuntimeWarning, stacklevel=2)
    set_fast = getattr(restorer, "set_fast", None)
    if callable(set_fast):
        set_fast(opts.fast)  # the one switch (fused blocks, SDPA, argmax, direct decoding) or the parity path
    if opts.channels_last:
        restorer.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    runner: Any = torch.compile(restorer, dynamic=False) if opts.compile else restorer
    return InferenceModel(restorer, opts, runner)
