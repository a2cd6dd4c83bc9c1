"""LightningCLI wiring for ``daefr fit|validate|test|predict``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from daefr.errors import CheckpointError, ConfigError, DaefrError

#: Stage arguments a checkpoint's hyper-parameters may not set: where outputs go and which other files
#: are read is the user's choice (their config), never the file's. Resuming replaces the weights anyway.
FILE_CHOSEN_KEYS = ("export_path", "init_from", "init_hq_codebook_from", "init_association_from")


def _checkpoint_hparams(path: Path) -> dict[str, Any]:
    """The checkpoint's ``hyper_parameters``, loaded weights-only and checked as untrusted data.

    Keys of :data:`FILE_CHOSEN_KEYS` are dropped. Raises :class:`CheckpointError` (one line naming the
    file) for an unreadable file and :class:`~daefr.errors.UnsafeFileError` for a refused class path.
    """
    import pickle

    import torch

    from daefr.registry import check_file_spec
    from daefr.utils.archive_limits import check_zip_expansion
    from daefr.utils.reasons import one_line_reason

    check_zip_expansion(path, "checkpoint")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused or unreadable checkpoint ({one_line_reason(exc)})") from None
    except Exception as exc:  # zip/pickle internals, a safetensors or text file: one line naming the file
        raise CheckpointError(f"{path}: cannot load checkpoint (truncated, corrupt or not a Lightning "
                              f"checkpoint?): {one_line_reason(exc)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a Lightning checkpoint dict")
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: hyper_parameters is a {type(hparams).__name__}, not a mapping")
    hparams = dict(hparams)
    hparams.pop("_instantiator", None)
    for key in FILE_CHOSEN_KEYS:
        hparams.pop(key, None)
    check_file_spec(hparams, f"{path} (hyper_parameters)")
    return hparams


class DaefrCLI(LightningCLI):
    """LightningCLI with OmegaConf interpolation; stages and data modules chosen by ``class_path``."""

    # Configuration errors become one-line ConfigErrors (daefr.cli_errors) instead of usage dumps and
    # nested jsonargparse reports; errors raised while training are not touched.
    def parse_arguments(self, parser: Any, args: Any) -> None:
        from jsonargparse import ArgumentError

        from daefr.cli_errors import config_error_message

        try:
            super().parse_arguments(parser, args)
        except ArgumentError as exc:
            command = sys.argv[1] if len(sys.argv) > 1 else "fit"
            raise ConfigError(f"{config_error_message(str(exc))} (see `daefr {command} --help`)") from None

    def instantiate_classes(self) -> None:
        from daefr.cli_errors import config_error_message, daefr_error_in_chain

        try:
            super().instantiate_classes()
        except DaefrError:
            raise
        except (ValueError, TypeError) as exc:
            inner = daefr_error_in_chain(exc)
            if inner is not None:
                raise inner from None
            raise ConfigError(config_error_message(str(exc))) from None

    def _parse_ckpt_path(self) -> None:
        # LightningCLI merges the checkpoint's hyper-parameters into the config before the Trainer's
        # CheckpointIO sees the file. Those come from a file, i.e. possibly from a stranger: they are
        # data (registry.check_file_spec: class paths only of daefr stages and registered components),
        # and never choose where outputs go or which other files are read (FILE_CHOSEN_KEYS).
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = _checkpoint_hparams(Path(ckpt_path))
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            raise CheckpointError(f"{ckpt_path}: its hyper_parameters do not parse as a daefr stage "
                                  "configuration") from None

    def _ckpt_path_given(self) -> str:
        subcommand = self.config.get("subcommand") if self.config else None
        return str(self.config[subcommand].get("ckpt_path")) if subcommand else "ckpt_path"

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except CheckpointError as exc:  # name the file the user gave when the message does not
            ckpt_path = (self.config.get(subcommand) or {}).get("ckpt_path") if self.config else None
            if ckpt_path and str(ckpt_path) not in str(exc):
                raise CheckpointError(f"{ckpt_path}: {exc}") from None
            raise


def run_lightning(argv: Sequence[str]) -> int:
    """Run one Lightning subcommand in-process; returns the exit code."""
    # LightningCLI reads sys.argv itself; passing ``args`` too makes it warn, so swap argv instead.
    # Keep the real program path in argv[0]: Lightning's DDP launcher re-runs `python argv[0] ...` for
    # the other ranks when daefr was started as a console script.
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "daefr", *argv]
    try:
        DaefrCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except SystemExit as exc:  # --help / --print_config exit through argparse
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except DaefrError as exc:  # config errors (above), bad checkpoints, NaN stops: one line
        print(f"daefr {argv[0] if argv else ''}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0
