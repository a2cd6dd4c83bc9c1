"""Save a checkpoint when the job is told to stop (SIGTERM, SIGUSR1), so it can resume from there.

Lightning already turns SIGTERM into a clean stop at the next batch boundary (``SIGTERMException``);
SIGUSR1 (the usual SLURM "time is nearly up" signal, ``#SBATCH --signal=USR1@90``) would by default
kill the process. :class:`PreemptionCheckpoint` handles both the same way, from the moment it is built
(before the model, the data and the Trainer's setup): the signal only sets a flag;
at the end of the current training batch -- a consistent state, the same point where Lightning's
``ModelCheckpoint`` saves -- the checkpoint is written (atomically when the Trainer uses
``AtomicCheckpointIO``) to ``<ModelCheckpoint dirpath>/last.ckpt`` (or ``<default_root_dir>/checkpoints/
last.ckpt``), and training stops. Resume with ``daefr fit ... --ckpt_path last`` (or the file's path).

Under SLURM with Lightning's auto-requeue (``SLURMEnvironment(auto_requeue=True)``), SIGUSR1 is left to
Lightning, which saves ``hpc_ckpt_N.ckpt``, requeues the job and resumes from it automatically; this
callback then only handles SIGTERM.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

__all__ = ["PreemptionCheckpoint"]


class PreemptionCheckpoint(Callback):
    """On SIGTERM/SIGUSR1: finish the current batch, save ``last.ckpt``, stop; resume with ``--ckpt_path last``.

    Args:
        filename: checkpoint file name (without ``.ckpt``) inside the ModelCheckpoint folder.
        signals: signal names handled besides SIGTERM (which Lightning always turns into a clean stop).
    """

    def __init__(self, filename: str = "last", signals: tuple[str, ...] = ("SIGUSR1",)) -> None:
        self.filename = filename
        self.signals = tuple(signals)
        self.saved_path: Path | None = None
        self._requested: int | None = None
        self._previous: dict[int, Any] = {}
        # From construction on (the CLI builds callbacks before the model, the data and the Trainer's
        # setup), a signal only sets the flag: it can no longer kill the process before fit starts.
        self._install()

    def _install(self) -> None:
        for name in self.signals:
            signum = int(getattr(signal, name))
            if signum in self._previous:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not in the main thread: signals cannot be handled here
                return

    # -------------------------------------------------------------------------- signal handling
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._requested = signum  # only a flag: the save happens at the batch boundary

    def _lightning_requeues(self, trainer: Trainer) -> bool:
        env = trainer._accelerator_connector.cluster_environment
        return isinstance(env, SLURMEnvironment) and env.auto_requeue

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Install the signal handlers (unless Lightning's SLURM requeue handles them) and reset the saved path."""
        # a signal received since construction is kept: it is acted on at the first batch end
        self.saved_path = None
        if self._lightning_requeues(trainer):
            # SIGUSR1 belongs to Lightning's requeue handler (installed by the Trainer, after ours)
            self._previous = {}
            return
        self._install()

    def _restore_handlers(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save ``last.ckpt`` now if a signal came after the last training batch."""
        # signalled after the last training batch (during the final validation, say): save now,
        # so a signal never ends a run without its checkpoint
        if self._requested is not None and self.saved_path is None:
            self._save(trainer, f"received {signal.Signals(self._requested).name}")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restore the previous signal handlers and forget any request."""
        self._restore_handlers()
        self._requested = None

    # -------------------------------------------------------------------------- saving
    def checkpoint_path(self, trainer: Trainer) -> Path:
        """Where the pre-emption checkpoint goes: beside the ModelCheckpoint's files when there is one."""
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                return Path(callback.dirpath) / f"{self.filename}{callback.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / f"{self.filename}.ckpt"

    def _save(self, trainer: Trainer, why: str) -> None:
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = path
        rank_zero_info(f"{why}: saved {path} at step {trainer.global_step}; resume with --ckpt_path last")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """After a signal, save ``last.ckpt`` at this batch end and stop the trainer."""
        # Save here, where ModelCheckpoint saves too, so the loop state in the file resumes exactly.
        if self.saved_path is not None:
            return
        if trainer.received_sigterm:
            self._save(trainer, "received SIGTERM")  # Lightning raises SIGTERMException after this batch
        elif self._requested is not None:
            self._save(trainer, f"received {signal.Signals(self._requested).name}")
            # Same clean stop as Lightning's SIGTERM path (on_exception hooks, teardown, exit).
            raise SIGTERMException

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Save ``last.ckpt`` when training dies of SIGTERM before a batch end; restore the signal handlers."""
        try:
            if isinstance(exception, SIGTERMException) and self.saved_path is None and trainer.training:
                self._save(trainer, "received SIGTERM")
        finally:
            self._restore_handlers()
