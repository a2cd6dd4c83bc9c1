"""Shared machinery of the daefr stages: learning rate, schedules, compile, NaN guard, evaluation, checkpoints.

:class:`TrainingStage` uses Lightning's automatic optimisation (one optimizer: the restoration stage), so
the Trainer's own options work unchanged: ``--trainer.accumulate_grad_batches``,
``--trainer.gradient_clip_val`` / ``gradient_clip_algorithm``. The GAN stages alternate generator and
discriminator updates and optimise manually through :class:`daefr.stages.manual.ManualOptimisationStage`.
Both provide:

* learning-rate schedules stepped once per optimizer step (``lr_scheduler``),
* the taming/DAEFR learning-rate scaling rule (``scale_lr``), see :meth:`TrainingStage.effective_learning_rate`,
* NaN/Inf detection: a step whose loss is not finite does not change the weights; ``max_nonfinite_steps``
  in a row stop training with :class:`NonFiniteLossError`,
* ``torch.compile`` of the trained networks (``compile: true`` or a dict of ``torch.compile`` options),
* evaluation: ``validation_step`` and ``test_step`` run the same metrics (logged as ``val/*`` and
  ``test/*``) through :meth:`TrainingStage.evaluation_step` and :meth:`TrainingStage.evaluation_epoch_end`.
* ``official_quirks`` (default on): reproduce the official training loop step for step (see
  :mod:`daefr.stages.manual` and docs/training.md, "Fidelity to the official training").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
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
    """Base LightningModule of the stages (automatic optimisation); subclasses implement the steps.

    Args:
        learning_rate: base learning rate (per sample when ``scale_lr``; official 4.5e-6).
        scale_lr: multiply by batch size x devices x nodes x accumulate_grad_batches (official rule).
        lr_batch_size: batch size used by the rule; default: the data module's ``batch_size``.
        betas: Adam betas of every optimizer (official (0.5, 0.9)).
        lr_scheduler: per-step schedule spec (see :func:`build_scheduler`); None = constant.
        max_nonfinite_steps: stop after this many consecutive skipped (NaN/Inf) steps.
        compile: ``torch.compile`` the trained networks (bool, or a dict of compile options).
        val_panels: number of validation samples shown in the LQ | restored | HQ panel.
        official_quirks: reproduce the official training loop (see the module docstring); default True.
        activation_checkpointing: recompute encoder/decoder activations in the backward pass instead of
            storing them (same gradients; codebook stage at 512 px: 0.44-0.50x peak memory for 1.12x time,
            benchmarks/RESULTS.md "Training").
        channels_last: train the networks and batches in ``torch.channels_last`` memory format.
        adam: ``default`` (torch's choice), ``foreach`` or ``fused`` Adam implementation (same update rule).
    """

    def __init__(
        self,
        learning_rate: float = 4.5e-6,
        scale_lr: bool = True,
        lr_batch_size: int | None = None,
        betas: Sequence[float] = (0.5, 0.9),
        lr_scheduler: dict[str, Any] | None = None,
        max_nonfinite_steps: int = 10,
        compile: bool | dict[str, Any] = False,
        val_panels: int = 4,
        official_quirks: bool = True,
        activation_checkpointing: bool = False,
        channels_last: bool = False,
        adam: str = "default",
    ) -> None:
        super().__init__()
        if len(tuple(betas)) != 2:
            raise ConfigError(f"betas must have two values, got {betas}")
        if adam not in ("default", "foreach", "fused"):
            raise ConfigError(f"adam must be default, foreach or fused, got {adam!r}")
        self.activation_checkpointing, self.channels_last, self.adam = bool(activation_checkpointing), \
            bool(channels_last), adam
        self.learning_rate = float(learning_rate)
        self.scale_lr = scale_lr
        self.lr_batch_size = lr_batch_size
        self.betas = (float(betas[0]), float(betas[1]))
        self.lr_scheduler_spec = dict(lr_scheduler) if lr_scheduler else None
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.compile_option = compile
        self.val_panels = int(val_panels)
        self.official_quirks = bool(official_quirks)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._window_bad = False
        self._bad_names: list[str] = []

    # ----- learning rate -------------------------------------------------------------------------
    def accumulation(self) -> int:
        """Micro-batches per optimizer step (the Trainer's ``accumulate_grad_batches`` here)."""
        return int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1

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
        return self.learning_rate * int(batch) * world * self.accumulation()

    def make_adam(self, params: Iterable[Any], lr: float) -> torch.optim.Adam:
        """Adam with the stage's betas over ``params`` (tensors or param-group dicts), in the chosen implementation."""
        implementation = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(self.adam, {})
        return torch.optim.Adam(params, lr=lr, betas=self.betas, **implementation)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        """The configured per-step schedule for ``optimizer``."""
        total = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else 0
        return build_scheduler(optimizer, self.lr_scheduler_spec, total)

    # ----- setup ---------------------------------------------------------------------------------
    def compiled_modules(self) -> list[nn.Module]:
        """Networks compiled when ``compile`` is on; subclasses list their trained networks."""
        return []

    def configure_model(self) -> None:
        """Apply ``activation_checkpointing`` and ``channels_last`` when on, then compile :meth:`compiled_modules`."""
        if self.activation_checkpointing:
            from daefr.nn.vqgan import set_activation_checkpointing

            if sum(set_activation_checkpointing(m, True) for m in self.compiled_modules()) == 0:
                raise ConfigError(f"{type(self).__name__}: activation_checkpointing found no VQGAN encoder or "
                                  "decoder among its trained networks (plugin components do not support it)")
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
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

    # ----- NaN guard -----------------------------------------------------------------------------
    def finite_or_skip(self, losses: Mapping[str, torch.Tensor]) -> bool:
        """True when every loss is finite; else mark the window bad (its step is skipped)."""
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
        if not bad:
            return True
        self._window_bad = True
        self._bad_names = bad
        return False

    def count_window(self) -> bool:
        """NaN bookkeeping at the end of an accumulation window; False (and counted) when it was bad."""
        if not self._window_bad:
            self.nonfinite_in_a_row = 0
            return True
        self._window_bad = False
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_skipped", float(self.nonfinite_total))
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"losses {self._bad_names} were NaN/Inf for {self.nonfinite_in_a_row} "
                f"optimizer steps in a row (global step {self.global_step}); lower the learning rate, "
                "set gradient_clip_val, or use bf16-mixed instead of 16-mixed precision"
            )
        return False

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Automatic optimisation: drop the gradients of a window with a NaN/Inf loss (the step changes nothing)."""
        if not self.automatic_optimization or self.count_window():
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # Adam skips parameters without a gradient: weights and moments unchanged

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, split: str) -> None:
        """Metrics of one evaluation batch, logged under ``{split}/`` (``val`` or ``test``)."""
        raise NotImplementedError

    def evaluation_epoch_end(self, split: str) -> None:
        """Log and reset the epoch metrics of ``split``."""

    def log_epoch_metrics(self, prefix: str, *metrics: Any) -> dict[str, torch.Tensor]:
        """Log ``{prefix}/{name}`` for every value the epoch ``metrics`` compute, then reset them; the values.

        Each metric's ``compute()`` already covers every process (torchmetrics syncs its states); ``sync_dist``
        only keeps Lightning from warning about epoch-level values in distributed runs.
        """
        values: dict[str, torch.Tensor] = {}
        for metric in metrics:
            values.update({k: torch.as_tensor(v).float() for k, v in metric.compute().items()})
            metric.reset()
        for key, value in values.items():
            self.log(f"{prefix}/{key}", value, sync_dist=True)
        return values

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Run :meth:`evaluation_step` with ``split='val'``."""
        self.evaluation_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        """Log the ``val`` epoch metrics (:meth:`evaluation_epoch_end`)."""
        self.evaluation_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """The validation metrics on a test set, logged as ``test/*`` (``daefr test``)."""
        self.evaluation_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        """Log the ``test`` epoch metrics (:meth:`evaluation_epoch_end`)."""
        self.evaluation_epoch_end("test")

    # ----- batches -------------------------------------------------------------------------------
    def images(self, batch: Mapping[str, Any], key: str) -> torch.Tensor:
        """``batch[key]`` as (B, 3, H, W), with a clear error when it is missing.

        In ``channels_last`` when that option is on; a clear error when the
        data module does not provide it.
        """
        if key not in batch:
            hint = " (configure a degradation in the data module to produce LQ images)" if key == "lq" else ""
            raise ConfigError(f"this stage needs batch[{key!r}] but the batch has keys {sorted(batch)}{hint}")
        x = batch[key]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ConfigError(f"batch[{key!r}] must be a (B, C, H, W) tensor, got {type(x).__name__}")
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ----- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen perceptual-loss weights from the checkpoint and store the stage's NaN-guard counters."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if any(m in f".{k}" for m in FROZEN_KEY_MARKERS)]:
            del state[key]
        checkpoint["daefr"] = {
            "stage": type(self).__name__,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "nonfinite_total": self.nonfinite_total,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the NaN-guard counters saved by :meth:`on_save_checkpoint`."""
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

