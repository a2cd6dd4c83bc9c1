"""Training callbacks of the daefr stages: EMA of the weights and exact-resume RNG state.

``EMAWeights`` keeps an exponential moving average of the trainable weights of the stage's generator
(``stage.ema_module()``); it is swapped in for validation and used by ``export_restorer`` when present,
and its shadow weights are saved in (and restored from) checkpoints.

``ResumeState`` makes ``ckpt_path`` resume exact: it saves the Python/NumPy/torch RNG states at the
moment a checkpoint is written and restores them when training resumes, and it runs validation with
forked RNG so that validating does not change the random stream of training. Together with Lightning's
own loop state (epoch, batch index, global step) and a resumable data loader (``FaceDataModule``'s
``StatefulDataLoader``, whose state Lightning stores in the checkpoint) this fixes the data position,
mid-epoch included. Lightning stores the loader state of rank 0 only; ``ResumeState`` gathers every
rank's loader state into the checkpoint and hands each rank its own on resume.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from daefr.errors import ConfigError

log = logging.getLogger(__name__)


def _ema_targets(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable float parameters plus float buffers of ``module``, by state-dict name."""
    out: dict[str, torch.Tensor] = {
        n: p for n, p in module.named_parameters() if p.requires_grad and p.is_floating_point()
    }
    out.update({n: b for n, b in module.named_buffers() if b.is_floating_point()})
    return out


class EMAWeights(Callback):
    """Exponential moving average of the generator weights (``shadow = d * shadow + (1 - d) * w``).

    Args:
        decay: EMA decay per optimizer step.
        start_step: before this global step the shadow simply copies the weights.
        every_n_steps: update every n optimizer steps.
        use_for_validation: swap the EMA weights in while validating (and for export).
    """

    def __init__(
        self, decay: float = 0.999, start_step: int = 0, every_n_steps: int = 1, use_for_validation: bool = True
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.every_n_steps = int(every_n_steps)
        self.use_for_validation = use_for_validation
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0
        self._last_step = -1
        self._backup: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        """The key of this callback's state in checkpoints."""
        return "EMAWeights"

    @staticmethod
    def _module(pl_module: LightningModule) -> nn.Module:
        getter = getattr(pl_module, "ema_module", None)
        if getter is None:
            raise ConfigError(f"{type(pl_module).__name__} has no ema_module(); EMAWeights needs a daefr stage")
        module: nn.Module = getter()
        return module

    def _init_shadow(self, pl_module: LightningModule) -> None:
        targets = _ema_targets(self._module(pl_module))
        if self.shadow and set(self.shadow) == set(targets):
            for name, tensor in targets.items():  # loaded from a checkpoint: move to the weights' device
                self.shadow[name] = self.shadow[name].to(device=tensor.device, dtype=tensor.dtype)
            return
        self.shadow = {n: t.detach().clone() for n, t in targets.items()}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the shadow weights from the module's (or a resumed shadow) and note the current step."""
        self._init_shadow(pl_module)
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """Update the shadow weights after each optimizer step (not after accumulating batches)."""
        step = trainer.global_step
        if step == self._last_step:  # no optimizer step in this batch (accumulating or skipped)
            return
        self._last_step = step
        if step % self.every_n_steps:
            return
        targets = _ema_targets(self._module(pl_module))
        with torch.no_grad():
            if step <= self.start_step:
                for name, tensor in targets.items():
                    self.shadow[name].copy_(tensor)
                return
            for name, tensor in targets.items():
                self.shadow[name].lerp_(tensor.detach().to(self.shadow[name].dtype), 1.0 - self.decay)
        self.num_updates += 1

    # ----- swapping ------------------------------------------------------------------------------
    def swap_in(self, pl_module: LightningModule) -> None:
        """Replace the live weights by the EMA weights (keeps a backup)."""
        if self._backup is not None or not self.shadow:
            return
        targets = _ema_targets(self._module(pl_module))
        self._backup = {n: t.detach().clone() for n, t in targets.items()}
        with torch.no_grad():
            for name, tensor in targets.items():
                tensor.copy_(self.shadow[name])

    def swap_out(self, pl_module: LightningModule) -> None:
        """Put the live weights back after :meth:`swap_in`."""
        if self._backup is None:
            return
        targets = _ema_targets(self._module(pl_module))
        with torch.no_grad():
            for name, tensor in targets.items():
                tensor.copy_(self._backup[name])
        self._backup = None

    @contextmanager
    def applied(self, pl_module: LightningModule) -> Iterator[None]:
        """Context in which ``pl_module`` holds the EMA weights."""
        self.swap_in(pl_module)
        try:
            yield
        finally:
            self.swap_out(pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Validate with the shadow weights when ``use_for_validation`` (not in the sanity check)."""
        if self.use_for_validation and not trainer.sanity_checking:
            self.swap_in(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put the trained weights back after validation."""
        self.swap_out(pl_module)

    # ----- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Decay, update count and shadow weights, saved in checkpoints."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {n: t.detach().cpu().clone() for n, t in self.shadow.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the update count and shadow weights saved by :meth:`state_dict`."""
        self.num_updates = int(state_dict.get("num_updates", 0))
        self.shadow = {n: t.clone() for n, t in state_dict.get("shadow", {}).items()}


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) RNG states, as tensors and plain values (weights-only safe)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [int(version), torch.tensor(list(internal), dtype=torch.int64), gauss],
        "numpy": [str(np_name), torch.from_numpy(np.asarray(np_keys).astype(np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(Callback):
    """Save the RNG states with every checkpoint and restore them on resume; validation runs with forked RNG.

    Restoring happens when the checkpoint is loaded, i.e. before the training data loader is iterated, so a
    resumed run draws the same shuffle order and degradations as an uninterrupted one.
    """

    def __init__(self) -> None:
        self._val_state: dict[str, Any] | None = None
        self._loaded_rng: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """The key of this callback's state in checkpoints."""
        return "ResumeState"

    def state_dict(self) -> dict[str, Any]:
        """The RNG states of the training stream (those from before validation when saved during it)."""
        # Checkpoints written during validation must hold the training stream, not the validation one.
        return {"rng": self._val_state if self._val_state is not None else capture_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved RNG states and keep them for :meth:`on_train_start`."""
        if "rng" in state_dict:
            restore_rng_state(state_dict["rng"])
            self._loaded_rng = state_dict["rng"]

    # ----- per-rank data loader positions --------------------------------------------------------------
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Put every rank's train loader state in the checkpoint (collective: runs on all ranks)."""
        fit = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        mine = fit.get("combined_loader")
        ranks: list[Any] = [mine]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, mine)
        checkpoint.setdefault("callbacks", {}).setdefault(self.state_key, {})["data_ranks"] = ranks

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Give this rank its own loader state (runs before Lightning restores its loops)."""
        fit = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict")
        ranks = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("data_ranks")
        if not isinstance(fit, dict) or ranks is None:
            return
        if len(ranks) == trainer.world_size:
            if ranks[trainer.global_rank] is None:
                fit.pop("combined_loader", None)
            else:
                fit["combined_loader"] = ranks[trainer.global_rank]
        elif fit.pop("combined_loader", None):
            log.warning("the checkpoint's data position was saved by %d processes, this run has %d: the interrupted "
                        "epoch's data starts again from its beginning", len(ranks), trainer.world_size)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """When resuming at an epoch boundary, re-seed and restart the train loader so it draws what the uninterrupted run drew."""
        # A checkpoint written after the last batch of an epoch resumes at the next epoch, but Lightning
        # iterates the train loader before it advances its epoch counter (which it has done by now), so a
        # loader seeded by the epoch (FaceDataModule) would replay the finished epoch. Iterate it again,
        # from the saved RNG state, so RNG-driven samplers draw exactly what the uninterrupted run drew.
        state, self._loaded_rng = self._loaded_rng, None
        loop = trainer.fit_loop
        fetcher = getattr(loop, "_data_fetcher", None)
        total = trainer.num_training_batches
        if state is None or fetcher is None or not isinstance(total, int):
            return
        if loop.epoch_loop.batch_progress.current.ready < total:
            return  # resuming mid-epoch: a resumable loader (state_dict/load_state_dict) continues where it was
        restore_rng_state(state)
        iter(fetcher)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Capture the training RNG states so validation runs on a fork."""
        self._val_state = capture_rng_state()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restore the training RNG states captured before validation."""
        if self._val_state is not None:
            restore_rng_state(self._val_state)
        self._val_state = None
