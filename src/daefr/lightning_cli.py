"""LightningCLI wiring for ``daefr fit|validate|test|predict``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


class DaefrCLI(LightningCLI):
    """LightningCLI with OmegaConf interpolation; stages and data modules chosen by ``class_path``."""


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
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except SystemExit as exc:  # --help / --print_config / argument errors exit through argparse
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0
