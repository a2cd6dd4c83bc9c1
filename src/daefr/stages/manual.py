"""Manual optimisation for the GAN stages (codebook, association) and the helpers they share.

The GAN stages alternate generator and discriminator updates, so they optimise manually. This base does
what Lightning's automatic loop would otherwise do, so the stages behave the same under every option:

* gradient accumulation (the stage's ``accumulate_grad_batches``; the Trainer's own option must stay 1),
* gradient clipping (the stage's ``gradient_clip_val``; the Trainer's option is not available in manual mode),
* ``global_step`` counts generator (main optimizer) steps only: discriminator steps go through the
  strategy directly, so ``--trainer.max_steps N`` means N generator updates in every stage,
* ``official_quirks`` (default on): every optimizer runs its own forward pass after the previous optimizer's
  update, discriminators step (on exactly-zero gradients) before ``disc_start``, the GAN terms and the
  adaptive weight are evaluated (and multiplied by 0) before ``disc_start``, and LPIPS keeps its dropout
  active in training. ``official_quirks: false`` runs one forward pass per batch for all optimizers, skips
  the discriminators until ``disc_start`` and keeps LPIPS in eval mode (see docs/training.md, "Fidelity to
  the official training").

Per optimizer the loop is :meth:`ManualOptimisationStage.optimise` (backward of one micro-batch, then clip +
step + zero_grad when the accumulation window closes), opened by :meth:`ManualOptimisationStage.begin_micro_batch`
and closed by :meth:`ManualOptimisationStage.end_window` (NaN bookkeeping and schedulers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn

from daefr.errors import ConfigError
from daefr.stages.base import TrainingStage

DEFAULT_LOSS: dict[str, Any] = {"name": "vqgan"}
"""Loss spec of a GAN stage's autoencoder branch (official weights, LPIPS on)."""


def split_special(named: list[tuple[str, nn.Parameter]], rule: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (normal, special) by the official rule: ``decoder_attn`` or ``decoder``."""
    normal: list[nn.Parameter] = []
    special: list[nn.Parameter] = []
    for name, p in named:
        if not p.requires_grad:
            continue
        if rule == "decoder_attn":
            is_special = "decoder" in name and "attn" in name
        else:
            is_special = "decoder" in name or "post_quant_conv" in name
        (special if is_special else normal).append(p)
    return normal, special


def set_loss_quirks(loss: nn.Module, enabled: bool) -> None:
    """Give a branch loss the stage's ``official_quirks`` (losses without the switch are left alone)."""
    setter = getattr(loss, "set_official_quirks", None)
    if callable(setter):
        setter(enabled)


class ManualOptimisationStage(TrainingStage):
    """:class:`TrainingStage` with manual optimisation (several optimizers per batch).

    Args:
        accumulate_grad_batches: micro-batches per optimizer step.
        gradient_clip_val: clip gradients to this norm (or value); None = off.
        gradient_clip_algorithm: ``norm`` or ``value``.
        **kwargs: options of :class:`daefr.stages.base.TrainingStage`.
    """

    def __init__(
        self,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if accumulate_grad_batches < 1:
            raise ConfigError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        self.automatic_optimization = False
        self.accumulate = int(accumulate_grad_batches)
        self.clip_val = gradient_clip_val
        self.clip_algorithm = gradient_clip_algorithm
        self._micro = 0

    def accumulation(self) -> int:
        """Micro-batches per optimizer step (the stage's ``accumulate_grad_batches``)."""
        return self.accumulate

    def setup(self, stage: str) -> None:
        """Refuse a Trainer-level ``accumulate_grad_batches`` (this stage accumulates itself)."""
        if self._trainer is None:
            return
        if self.trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                f"set the stage's `accumulate_grad_batches` (model.init_args), not the Trainer's: {type(self).__name__} "
                "optimises manually"
            )
        precision = str(self.trainer.precision)
        if self.clip_val and precision.startswith("16"):
            raise ConfigError("gradient clipping with 16-mixed precision is not supported; use bf16-mixed")

    # ----- optimisation helpers ------------------------------------------------------------------
    @contextmanager
    def frozen(self, *modules: nn.Module | None) -> Iterator[None]:
        """Temporarily stop gradients to the trainable parameters of ``modules``."""
        params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def begin_micro_batch(self, batch_idx: int) -> bool:
        """Count one micro-batch; True when it closes an accumulation window (or the epoch)."""
        self._micro += 1
        last = bool(getattr(self.trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))
        return (batch_idx + 1) % self.accumulate == 0 or last

    def backward_scaled(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch loss, scaled for accumulation."""
        self.manual_backward(loss / self.accumulate)

    def step_optimizer(self, opt: LightningOptimizer, main: bool) -> None:
        """Clip, step and zero the gradients of ``opt``, unless a loss of this window was not finite.

        Only the ``main`` (generator) optimizer counts in ``trainer.global_step``; the others go through the
        strategy directly (same precision handling, not counted).
        """
        if self._window_bad:
            return  # end_window drops the gradients and counts the skipped step
        if self.clip_val:
            self.clip_gradients(opt.optimizer, gradient_clip_val=self.clip_val, gradient_clip_algorithm=self.clip_algorithm)
        if main:
            opt.step()
        else:
            self.trainer.strategy.optimizer_step(opt.optimizer, closure=_no_closure)
        opt.zero_grad(set_to_none=True)

    def optimise(self, opt: LightningOptimizer, loss: torch.Tensor, closes: bool, name: str, main: bool = False) -> None:
        """One optimizer's turn: backward of ``loss`` (skipped when not finite), then step when ``closes``."""
        if self.finite_or_skip({name: loss}):
            self.backward_scaled(loss)
        if closes:
            self.step_optimizer(opt, main)

    def end_window(self, optimizers: Sequence[LightningOptimizer]) -> bool:
        """Close an accumulation window: NaN bookkeeping and schedulers; False when its steps were skipped."""
        self._micro = 0
        if self._window_bad:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        if not self.count_window():
            return False
        schedulers = self.lr_schedulers()
        with warnings.catch_warnings():
            # schedulers of optimizers that did not step yet (discriminators before disc_start) still
            # advance, so that every schedule follows global_step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for sch in schedulers if isinstance(schedulers, list) else ([schedulers] if schedulers else []):
                sch.step()  # type: ignore[union-attr,call-arg]
        return True

    def optimizer_list(self) -> list[LightningOptimizer]:
        """The Lightning-wrapped optimizers, always as a list."""
        opts = self.optimizers()
        return list(opts) if isinstance(opts, list) else [opts]  # type: ignore[list-item]


def _no_closure() -> None:
    return None
