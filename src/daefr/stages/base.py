"""Shared training machinery of the daefr stages (manual optimisation).

Every stage optimises manually, because the GAN stages alternate generator and discriminator updates.
This base class provides what Lightning's automatic loop would otherwise do, so the stages behave the
same under every option:

* gradient accumulation (``accumulate_grad_batches``; the Trainer's own option must stay 1),
* gradient clipping (``gradient_clip_val``; the Trainer's option is not available in manual mode),
* learning-rate schedules stepped once per optimizer step (``lr_scheduler``),
* the taming/DAEFR learning-rate scaling rule (``scale_lr``), see :meth:`effective_learning_rate`,
* NaN/Inf detection: a step whose loss is not finite is skipped; ``max_nonfinite_steps`` in a row stop
  training with :class:`NonFiniteLossError`,
* ``global_step`` counts generator (main optimizer) steps only: discriminator steps go through the
  strategy directly, so ``--trainer.max_steps N`` means N generator updates in every stage.
* ``torch.compile`` of the trained networks (``compile: true`` or a dict of ``torch.compile`` options).
* ``official_quirks`` (default on): reproduce the official training loop step for step (pytorch-lightning
  1.0.8 with several optimizers): every optimizer runs its own forward pass after the previous optimizer's
  update, discriminators step (on exactly-zero gradients) before ``disc_start``, the GAN terms and the
  adaptive weight are evaluated (and multiplied by 0) before ``disc_start``, and LPIPS keeps its dropout
  active in training. ``official_quirks: false`` runs one forward pass per batch for all optimizers, skips
  the discriminators until ``disc_start`` and keeps LPIPS in eval mode (see docs/training.md, "Fidelity to
  the official training", for what each difference changes).

Per optimizer the loop is :meth:`TrainingStage.optimise` (backward of one micro-batch, then clip + step +
zero_grad when the accumulation window closes), opened by :meth:`TrainingStage.begin_micro_batch` and closed
by :meth:`TrainingStage.end_window` (NaN bookkeeping and schedulers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR

from daefr.errors import ConfigError, DaefrError

# Keys of frozen loss networks (LPIPS) are left out of checkpoints: they come from their weight files.
FROZEN_KEY_MARKERS = (".perceptual.",)


class NonFiniteLossError(DaefrError):
    """Training produced NaN/Inf losses for too many optimizer steps in a row."""


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any] | None, total_steps: int) -> LRScheduler:
    """Per-step LR schedule from ``{name: constant|multistep|cosine, warmup_steps: 0, ...}``.

    ``multistep``: ``milestones`` (steps) and ``gamma`` (official: [400000, 800000], 0.1).
    ``cosine``: decays to ``min_lr_ratio`` of the base LR at ``total_steps`` (default ``trainer.max_steps``).
    All accept a linear ``warmup_steps``.
    """
    spec = dict(spec or {"name": "constant"})
    name = spec.pop("name", "constant")
    warmup = int(spec.pop("warmup_steps", 0))
    if name == "multistep" and not warmup:
        return MultiStepLR(optimizer, milestones=list(spec.pop("milestones", [])), gamma=float(spec.pop("gamma", 0.1)))

    def warm(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0

    if name == "constant":
        fn = warm
    elif name == "multistep":
        milestones = sorted(int(m) for m in spec.pop("milestones", []))
        gamma = float(spec.pop("gamma", 0.1))

        def fn(step: int) -> float:
            return warm(step) * gamma ** sum(step >= m for m in milestones)
    elif name == "cosine":
        horizon = int(spec.pop("total_steps", 0) or total_steps)
        floor = float(spec.pop("min_lr_ratio", 0.0))
        if horizon <= 0:
            raise ConfigError("a cosine lr_scheduler needs total_steps or a finite trainer.max_steps")

        def fn(step: int) -> float:
            t = min(max(step - warmup, 0) / max(horizon - warmup, 1), 1.0)
            return warm(step) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
    else:
        raise ConfigError(f"unknown lr_scheduler {name!r}; use constant, multistep or cosine")
    if spec:
        raise ConfigError(f"lr_scheduler {name!r} got unknown keys {sorted(spec)}")
    return LambdaLR(optimizer, fn)


class TrainingStage(LightningModule):
    """Base LightningModule of the three stages; subclasses implement ``training_step`` with the helpers below.

    Args:
        learning_rate: base learning rate (per sample when ``scale_lr``; official 4.5e-6).
        scale_lr: multiply by batch size x devices x nodes x accumulate_grad_batches (official rule).
        lr_batch_size: batch size used by the rule; default: the data module's ``batch_size``.
        betas: Adam betas of every optimizer (official (0.5, 0.9)).
        lr_scheduler: per-step schedule spec (see :func:`build_scheduler`); None = constant.
        accumulate_grad_batches: micro-batches per optimizer step.
        gradient_clip_val: clip gradients to this norm (or value); None = off.
        gradient_clip_algorithm: ``norm`` or ``value``.
        max_nonfinite_steps: stop after this many consecutive skipped (NaN/Inf) steps.
        compile: ``torch.compile`` the trained networks (bool, or a dict of compile options).
        val_panels: number of validation samples shown in the LQ | restored | HQ panel.
        official_quirks: reproduce the official training loop (see the module docstring); default True.
    """

    def __init__(
        self,
        learning_rate: float = 4.5e-6,
        scale_lr: bool = True,
        lr_batch_size: int | None = None,
        betas: Sequence[float] = (0.5, 0.9),
        lr_scheduler: dict[str, Any] | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        max_nonfinite_steps: int = 10,
        compile: bool | dict[str, Any] = False,
        val_panels: int = 4,
        official_quirks: bool = True,
    ) -> None:
        super().__init__()
        if accumulate_grad_batches < 1:
            raise ConfigError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError(f"gradient_clip_algorithm must be 'norm' or 'value', got {gradient_clip_algorithm!r}")
        if len(tuple(betas)) != 2:
            raise ConfigError(f"betas must have two values, got {betas}")
        self.automatic_optimization = False
        self.learning_rate = float(learning_rate)
        self.scale_lr = scale_lr
        self.lr_batch_size = lr_batch_size
        self.betas = (float(betas[0]), float(betas[1]))
        self.lr_scheduler_spec = dict(lr_scheduler) if lr_scheduler else None
        self.accumulate = int(accumulate_grad_batches)
        self.clip_val = gradient_clip_val
        self.clip_algorithm = gradient_clip_algorithm
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.compile_option = compile
        self.val_panels = int(val_panels)
        self.official_quirks = bool(official_quirks)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._window_bad = False
        self._micro = 0

    # ----- learning rate -------------------------------------------------------------------------
    def effective_learning_rate(self) -> float:
        """``learning_rate`` x (batch x devices x nodes x accumulate) when ``scale_lr`` (taming/DAEFR rule)."""
        if not self.scale_lr:
            return self.learning_rate
        batch = self.lr_batch_size
        if batch is None and self._trainer is not None:
            dm = getattr(self.trainer, "datamodule", None)
            batch = getattr(dm, "batch_size", None) or getattr(getattr(dm, "hparams", {}), "get", lambda *_: None)(
                "batch_size"
            )
        if batch is None:
            raise ConfigError(
                "scale_lr needs the batch size: the data module has no `batch_size`; set the stage's "
                "`lr_batch_size` or `scale_lr: false`"
            )
        world = self.trainer.world_size if self._trainer is not None else 1
        return self.learning_rate * int(batch) * world * self.accumulate

    def make_adam(self, params: Iterable[Any], lr: float) -> torch.optim.Adam:
        """Adam with the stage's betas over ``params`` (tensors or param-group dicts)."""
        return torch.optim.Adam(params, lr=lr, betas=self.betas)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        """The configured per-step schedule for ``optimizer``."""
        total = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 0
        return build_scheduler(optimizer, self.lr_scheduler_spec, total)

    # ----- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self._trainer is None:
            return
        if self.trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "set the stage's `accumulate_grad_batches` (model.init_args), not the Trainer's: daefr stages "
                "optimise manually"
            )
        precision = str(self.trainer.precision)
        if self.clip_val and precision.startswith("16"):
            raise ConfigError("gradient clipping with 16-mixed precision is not supported; use bf16-mixed")

    def compiled_modules(self) -> list[nn.Module]:
        """Networks compiled when ``compile`` is on; subclasses list their trained networks."""
        return []

    def configure_model(self) -> None:
        if not self.compile_option:
            return
        options = dict(self.compile_option) if isinstance(self.compile_option, Mapping) else {}
        for module in self.compiled_modules():
            if not getattr(module, "_daefr_compiled", False):
                module.compile(**options)  # in place: state-dict keys stay unchanged
                module._daefr_compiled = True  # type: ignore[assignment]

    def ema_module(self) -> nn.Module:
        """Module whose weights an EMA callback averages (the trained generator)."""
        return self

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

    def step_window(self, batch_idx: int) -> bool:
        """Alias of :meth:`begin_micro_batch` (older name)."""
        return self.begin_micro_batch(batch_idx)

    def finite_or_skip(self, losses: Mapping[str, torch.Tensor]) -> bool:
        """True when every loss is finite; else mark the window bad (its step is skipped)."""
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
        if not bad:
            return True
        self._window_bad = True
        self._bad_names = bad
        return False

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
            self._window_bad = False
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            self.log("train/nonfinite_skipped", float(self.nonfinite_total))
            if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
                raise NonFiniteLossError(
                    f"losses {getattr(self, '_bad_names', [])} were NaN/Inf for {self.nonfinite_in_a_row} "
                    f"optimizer steps in a row (global step {self.global_step}); lower the learning rate, "
                    "set gradient_clip_val, or use bf16-mixed instead of 16-mixed precision"
                )
            return False
        self.nonfinite_in_a_row = 0
        schedulers = self.lr_schedulers()
        with warnings.catch_warnings():
            # schedulers of optimizers that did not step yet (discriminators before disc_start) still
            # advance, so that every schedule follows global_step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            for sch in schedulers if isinstance(schedulers, list) else ([schedulers] if schedulers else []):
                sch.step()  # type: ignore[union-attr,call-arg]
        return True

    def finish_window(self, main: LightningOptimizer, others: Sequence[LightningOptimizer] = ()) -> bool:
        """Clip and step ``main`` then ``others`` at the end of a window, then :meth:`end_window`."""
        for i, opt in enumerate([main, *others]):
            self.step_optimizer(opt, main=i == 0)
        return self.end_window([main, *others])

    def optimizer_list(self) -> list[LightningOptimizer]:
        """The Lightning-wrapped optimizers, always as a list."""
        opts = self.optimizers()
        return list(opts) if isinstance(opts, list) else [opts]  # type: ignore[list-item]

    # ----- batches -------------------------------------------------------------------------------
    @staticmethod
    def images(batch: Mapping[str, Any], key: str) -> torch.Tensor:
        """``batch[key]`` as (B, 3, H, W); a clear error when the data module does not provide it."""
        if key not in batch:
            hint = " (configure a degradation in the data module to produce LQ images)" if key == "lq" else ""
            raise ConfigError(f"this stage needs batch[{key!r}] but the batch has keys {sorted(batch)}{hint}")
        x = batch[key]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ConfigError(f"batch[{key!r}] must be a (B, C, H, W) tensor, got {type(x).__name__}")
        return x

    # ----- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if any(m in f".{k}" for m in FROZEN_KEY_MARKERS)]:
            del state[key]
        checkpoint["daefr"] = {
            "stage": type(self).__name__,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("daefr", {})
        self.nonfinite_in_a_row = int(meta.get("nonfinite_in_a_row", 0))
        self.nonfinite_total = int(meta.get("nonfinite_total", 0))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load, filling the frozen perceptual-loss weights (not stored in checkpoints) from this module."""
        merged = dict(state_dict)
        for key, value in super().state_dict().items():
            if any(m in f".{key}" for m in FROZEN_KEY_MARKERS) and key not in merged:
                merged[key] = value
        if strict:  # one clear line instead of torch's list of every missing key (daefr.utils.state_dicts)
            from daefr.errors import CheckpointError
            from daefr.utils.state_dicts import describe_mismatch

            problem = describe_mismatch(super().state_dict(), merged)
            if problem is not None:
                raise CheckpointError(
                    f"checkpoint does not fit this {type(self).__name__}: {problem}; was it written by another "
                    "stage or with another architecture in the config?"
                )
        return super().load_state_dict(merged, strict=strict, assign=assign)


def _no_closure() -> None:
    return None
