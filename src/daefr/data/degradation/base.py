"""Base class of degradations: per-sample parameter sampling, application and replay, written once.

A degradation (built-in op, the built-in pipeline or a plugin) subclasses :class:`DegradationOp` and
implements two methods, after kornia's augmentation base (``generate_parameters`` / ``apply_transform``):

* :meth:`DegradationOp.sample_params` ``(batch, height, width, generator) -> {name: (B, ...) CPU tensor}``:
  draw the per-sample parameters, on the CPU (:meth:`DegradationOp.uniform` draws on the generator's
  device and returns CPU tensors, so a seeded generator gives the same draw on every device);
* :meth:`DegradationOp.apply_params` ``(hq, params) -> lq``: apply them, with no randomness left (noise
  comes from a generator seeded by a ``noise_seed`` parameter, see :meth:`DegradationOp.seeded_generator`).

The base's ``forward(hq, generator=None, params=None)`` checks the input, samples (or takes ``params``:
replay), applies under ``no_grad`` on a detached input and returns a :class:`DegradationOutput`;
``replay(hq, params)`` is ``forward(hq, params=params)``. Ops listed in ``param_keys`` are checked on
replay (missing keys, batch size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from daefr.data.degradation import ops


@dataclass
class DegradationOutput:
    """``lq`` ``(B, 3, H, W)`` in [0, 1] on 8-bit levels, input dtype; ``params`` per-sample tensors (CPU).

    ``hq`` is the HQ batch changed by the degradation (e.g. GFPGAN's ``gt_gray``: the samples turned
    gray in ``lq`` are gray here too), or ``None`` when the HQ batch is unchanged.
    """

    lq: Tensor
    params: dict[str, Tensor] = field(default_factory=dict)
    hq: Tensor | None = None


def check_images(hq: Tensor) -> None:
    """Refuse anything but a floating-point ``(B, 3, H, W)`` batch (ValueError saying what came instead)."""
    if not isinstance(hq, Tensor) or hq.ndim != 4 or hq.shape[1] != 3:
        shape = tuple(hq.shape) if isinstance(hq, Tensor) else type(hq).__name__
        raise ValueError(f"degradation expects RGB images (B, 3, H, W) in [0, 1], got {shape}")
    if not hq.is_floating_point():
        raise ValueError(f"degradation expects a floating-point tensor in [0, 1], got {hq.dtype}")


def check_params(params: Mapping[str, Tensor], keys: tuple[str, ...], batch: int) -> None:
    """Refuse replayed ``params`` that lack one of ``keys`` or hold another batch size."""
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"degradation params lack {missing}; pass the dict that forward() returned")
    if any(int(params[k].shape[0]) != batch for k in keys):
        raise ValueError(f"degradation params do not match the batch size {batch}")


class DegradationOp(nn.Module):
    """A random degradation of ``(B, 3, H, W)`` images in [0, 1]; subclasses implement the two methods below.

    Attributes:
        param_keys: names of the parameters :meth:`sample_params` returns (checked on replay).
        quantize_output: round ``lq`` to 8-bit levels after :meth:`apply_params` (default True).
    """

    param_keys: tuple[str, ...] = ()
    quantize_output: bool = True  # round lq to 8-bit levels after apply_params (off when it does so itself)

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-sample parameters of a batch of ``(height, width)`` images: CPU tensors, first dimension ``batch``."""
        raise NotImplementedError

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``hq`` ``(B, 3, H, W)`` in [0, 1] (detached, any float dtype) degraded with ``params`` (CPU tensors)."""
        raise NotImplementedError

    def apply_to_hq(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor | None:
        """The HQ batch as the degradation changes it (``None``: unchanged, the default)."""
        return None

    def forward(self, hq: Tensor, generator: torch.Generator | None = None,
                params: Mapping[str, Tensor] | None = None) -> DegradationOutput:
        """Degrade ``hq`` ``(B, 3, H, W)`` in [0, 1] with fresh parameters, or with ``params`` (replay)."""
        check_images(hq)
        b, _, h, w = hq.shape
        if params is None:
            drawn = self.sample_params(b, h, w, generator)
        else:
            drawn = dict(params)
            check_params(drawn, self.param_keys, b)
        with torch.no_grad():
            x = hq.detach()
            lq = self.apply_params(x, drawn)
            if self.quantize_output:
                lq = ops.quantize_8bit(lq.to(torch.float32))
            lq = lq.to(hq.dtype)
            changed = self.apply_to_hq(x, drawn)
        return DegradationOutput(lq, drawn, None if changed is None else changed.to(hq.dtype))

    def replay(self, hq: Tensor, params: Mapping[str, Tensor]) -> DegradationOutput:
        """Apply the given ``params`` (as returned by :meth:`forward`) exactly; same params -> same ``lq``."""
        return self(hq, params=params)

    # ----- sampling helpers ----------------------------------------------------------------------
    @staticmethod
    def uniform(lo_hi: tuple[float, float], generator: torch.Generator | None, *shape: int) -> Tensor:
        """float64 CPU draws of ``shape`` uniform in ``[low, high]``, drawn on the generator's device."""
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(*shape, generator=generator, device=dev, dtype=torch.float64).cpu()
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

    @staticmethod
    def draw_seed(batch: int, generator: torch.Generator | None) -> Tensor:
        """One noise seed for the batch, repeated per sample: ``(B,)`` int64 (the ``noise_seed`` parameter)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(0, 2**62, (1,), generator=generator, device=dev).cpu().expand(batch).clone()

    @staticmethod
    def seeded_generator(params: Mapping[str, Tensor], device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded with ``params["noise_seed"]``: the op's noise, replayable."""
        gen = torch.Generator(device=device)
        gen.manual_seed(int(params["noise_seed"][0]))
        return gen



class DegradationChain(DegradationOp):
    """Ops applied one after the other (e.g. the built-in pipeline, then a plugin op), rounded to 8 bit once.

    The parameters of op ``i`` are stored as ``"{i}.{name}"``; the HQ batch goes through each op's
    :meth:`~DegradationOp.apply_to_hq` in order.
    """

    def __init__(self, ops: Sequence[DegradationOp]) -> None:
        super().__init__()
        if not ops:
            raise ValueError("a degradation chain needs at least one op")
        self.ops = nn.ModuleList(ops)
        self.param_keys = tuple(f"{i}.{key}" for i, op in enumerate(ops) for key in op.param_keys)

    def _ops(self) -> list[DegradationOp]:
        return [cast(DegradationOp, op) for op in self.ops]

    def _of(self, params: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
        prefix = f"{index}."
        return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Each op's parameters for a batch, keys prefixed by the op's index (``0.noise_sigma``...)."""
        return {f"{i}.{k}": v for i, op in enumerate(self._ops())
                for k, v in op.sample_params(batch, height, width, generator).items()}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Apply the ops in order to ``hq`` (B, 3, H, W) in [0, 1] -> LQ (B, 3, H, W) float32."""
        x = hq.to(torch.float32)
        for i, op in enumerate(self._ops()):
            x = op.apply_params(x, self._of(params, i)).to(torch.float32)
        return x

    def apply_to_hq(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor | None:
        """The HQ image as the ops change it (gray ground truth, say), or None when no op changes it."""
        x, changed = hq, False
        for i, op in enumerate(self._ops()):
            out = op.apply_to_hq(x, self._of(params, i))
            x, changed = (x, changed) if out is None else (out, True)
        return x if changed else None
