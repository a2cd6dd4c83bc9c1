"""LightningCLI wiring for ``daefr fit|validate|test|predict``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from daefr.errors import CheckpointError, ConfigError, DaefrError


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
        # LightningCLI peeks into ckpt_path (torch.load, weights-only) for hyper-parameters before the
        # Trainer's CheckpointIO sees it: report a corrupt or refused file as one line naming it.
        import pickle

        from daefr.utils.reasons import one_line_reason

        try:
            super()._parse_ckpt_path()
        except DaefrError:
            raise
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{self._ckpt_path_given()}: refused or unreadable checkpoint "
                                  f"({one_line_reason(exc)})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"{self._ckpt_path_given()}: cannot load checkpoint (truncated or corrupt?): "
                                  f"{one_line_reason(exc)}") from None

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
