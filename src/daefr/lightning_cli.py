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


#: Config keys (last part) whose numbers count things: never negative (``max_*`` may be -1: unlimited).
_COUNT_SUFFIXES = ("_size", "_steps", "_epochs", "_batches", "_workers")
_COUNT_NAMES = ("size", "steps", "resolution", "n_embed")
_UNLIMITED = ("max_steps", "max_epochs", "max_time", "num_sanity_val_steps")


def _check_values(config: Any, where: str = "") -> None:
    """Refuse NaN/Inf numbers anywhere and negative counts (sizes, steps, epochs) with one line naming the key."""
    import math

    items = config.items() if hasattr(config, "items") else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        at = f"{where}.{key}" if where else str(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{at} is {value}; give a finite number")
        if str(key).rsplit(".", 1)[-1] == "batch_size" and isinstance(value, int) and value < 1:
            raise ConfigError(f"{at} is {value}; it must be >= 1")
        name = str(key).rsplit(".", 1)[-1]  # jsonargparse Namespaces yield flattened dotted keys
        is_count = name.endswith(_COUNT_SUFFIXES) or name in _COUNT_NAMES
        if is_count and isinstance(value, (int, float)) and value < 0 and not (name in _UNLIMITED and value == -1):
            allowed = " (or -1 for no limit)" if name in _UNLIMITED else ""
            raise ConfigError(f"{at} is {value}; it counts something, so it must be >= 0{allowed}")
        if hasattr(value, "items") or isinstance(value, list):
            _check_values(value, at)


def _refuse_empty_configs(argv: Sequence[str]) -> None:
    """An empty ``--config`` file gives jsonargparse's bare "Unexpected config": say what it is instead."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--config", "-c") and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if value is None or not Path(value).is_file():
            continue
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
            raise ConfigError(f"config file {value} is empty; start from one of configs/ (e.g. "
                              "configs/tiny/hq_codebook.yaml) or run `daefr fit --print_config`")


#: Lightning's known noise in daefr's runs (messages, not categories: other warnings stay visible).
_NOISE_WARNINGS = (
    r".*Using ModelCheckpoint with manual optimization.*",  # GAN stages save the post-step state on purpose
    r".*LeafSpec.*",  # a torch deprecation inside Lightning's own pytree helper
    r".*IterableDataset.*__len__.*",  # shard streams report an estimated length
    r".*module\(s\) in eval mode at the start of training.*",  # frozen codebook/decoder stay in eval mode
)


class _DropTips:
    """logging filter: drop Lightning's product advertisements ("💡 Tip: ..."), keep everything else."""

    def filter(self, record: Any) -> bool:
        return "Tip: For seamless" not in str(record.getMessage())


def quiet_lightning() -> None:
    """Silence the known noise of Lightning runs (see ``_NOISE_WARNINGS``) and its logger advertisements."""
    import logging
    import warnings

    for pattern in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())


def final_line(trainer: Any, model: Any = None) -> str:
    """``daefr fit: checkpoints in DIR (last: ..., best: ...)``, plus an exported restorer when the stage has one."""
    folders = _checkpoint_folders(trainer)
    last = best = ""
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        last = last or str(getattr(callback, "last_model_path", "") or "")
        best = best or str(getattr(callback, "best_model_path", "") or "")
    parts = [f"last: {last}" if last else "", f"best: {best}" if best else ""]
    detail = ", ".join(p for p in parts if p)
    where = ", ".join(dict.fromkeys(folders)) or "nowhere (no ModelCheckpoint callback)"
    line = f"daefr fit: done; checkpoints in {where}" + (f" ({detail})" if detail else "")
    export = getattr(model, "export_path", None)
    if export and Path(str(export)).is_file():
        line += f"; restorer exported to {export}"
    return line


def _interpolation_message(exc: Exception) -> str:
    """One line from an OmegaConf interpolation error: what failed, where, and the fix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    import re

    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "")
    key = re.sub(r"^(fit|validate|test|predict)\.", "", key)  # keys as the config writes them
    where = f" in {key}" if key else ""
    what = lines[0] if lines else type(exc).__name__
    # omegaconf+ mode reads interpolations relative to the stage's root: show them as written
    what = re.sub(r" \(resolved to '[^']*'\)", "", re.sub(r"'\.+", "'", what))
    return (f"cannot resolve an interpolation{where}: {what}; set the environment variable or define the key "
            "it names, or write the value directly")


def _checkpoint_folders(trainer: Any) -> list[str]:
    folders: list[str] = []
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        resolve = getattr(callback, "_ModelCheckpoint__resolve_ckpt_dir", None)
        folder = resolve(trainer) if resolve is not None else getattr(callback, "dirpath", None)
        if folder:
            folders.append(str(folder))
    return folders


def _clean_checkpoint_temps(trainer: Any) -> None:
    """Remove the hidden temporaries a save killed mid-write left in the checkpoint folders (rank 0)."""
    from daefr.utils.io import clean_orphaned_temps

    if getattr(trainer, "global_rank", 0) != 0:
        return
    for folder in _checkpoint_folders(trainer):
        for path in clean_orphaned_temps(folder):
            print(f"daefr fit: removed {path}, left by a save that was killed", file=sys.stderr)


def _warn_if_no_last_checkpoint(trainer: Any) -> None:
    """``--ckpt_path last`` with no last checkpoint: Lightning starts from scratch; say so loudly."""
    found: set[str] = set()
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        finder = getattr(callback, "_find_last_checkpoints", None)
        if finder is not None:
            found |= finder(trainer)
    folders = _checkpoint_folders(trainer)
    if not found:
        where = ", ".join(folders) or "this run (no ModelCheckpoint callback)"
        print(f"daefr fit: WARNING: --ckpt_path last: no last checkpoint in {where}; STARTING FROM SCRATCH "
              "(pass an explicit checkpoint path to require a resume)", file=sys.stderr, flush=True)


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
        raise CheckpointError(f"{path}: cannot load checkpoint (truncated or corrupt, or not a Lightning "
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

    def add_arguments_to_parser(self, parser: Any) -> None:
        """LightningCLI hook: accept the ``base`` key of stage configs (composed by daefr.config_files)."""
        parser.add_argument("--base", type=str | list[str] | None, default=None,
                            help="base config file(s) a --config file builds on (read first; the file's own "
                                 "keys win); written as `base: base.yaml` at the top of a stage config")

    # Configuration errors become one-line ConfigErrors (daefr.cli_errors) instead of usage dumps and
    # nested jsonargparse reports; errors raised while training are not touched.
    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse as LightningCLI does; bad arguments, empty configs and failed interpolations are one-line ConfigErrors."""
        from jsonargparse import ArgumentError
        from omegaconf.errors import OmegaConfBaseException

        from daefr.cli_errors import config_error_message

        command = sys.argv[1] if len(sys.argv) > 1 else "fit"
        _refuse_empty_configs(sys.argv[2:] if args is None else list(args))
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as exc:
            raise ConfigError(f"{config_error_message(str(exc))} (see `daefr {command} --help`)") from None
        except OmegaConfBaseException as exc:  # ${oc.env:UNSET}, ${missing.key}
            raise ConfigError(_interpolation_message(exc)) from None
        _check_values(self.config)

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer; a constructor's bad value is a one-line ConfigError."""
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        from daefr.cli_errors import config_error_message, daefr_error_in_chain

        try:
            super().instantiate_classes()
        except DaefrError:
            raise
        except (ValueError, TypeError, MisconfigurationException) as exc:
            inner = daefr_error_in_chain(exc)
            if inner is not None:
                raise inner from None
            raise ConfigError(config_error_message(str(exc))) from None

    # Private override (pinned by tests/unit/test_cli_lightning_hooks.py): LightningCLI offers no public hook
    # between reading --ckpt_path and merging the checkpoint's hyper-parameters into the config.
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

    def before_fit(self) -> None:
        """LightningCLI hook: clean temporaries of a killed save; warn when ``--ckpt_path last`` finds none."""
        _clean_checkpoint_temps(self.trainer)
        if (self.config.get("fit") or {}).get("ckpt_path") == "last":
            _warn_if_no_last_checkpoint(self.trainer)

    def after_fit(self) -> None:
        """LightningCLI hook: one final line saying where the checkpoints (and an exported restorer) went."""
        if getattr(self.trainer, "global_rank", 0) == 0:
            print(final_line(self.trainer, self.model), file=sys.stderr, flush=True)

    # Private override (pinned by tests/unit/test_cli_lightning_hooks.py): LightningCLI has no public hook
    # around the subcommand call, and a CheckpointError must name the file the user gave.
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
    from jsonargparse import set_parsing_settings

    import daefr.data.datamodule  # noqa: F401  (stages and data modules resolve by short name: `--model CodebookStage`)
    import daefr.stages  # noqa: F401

    # interpolations in a config are read from the stage's root (`${trainer.default_root_dir}`), not from
    # the subcommand's (`${fit.trainer...}`), so one config serves fit, validate and daefr train
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    quiet_lightning()
    saved_argv = sys.argv
    try:
        from daefr.config_files import expand_config_args

        expanded = expand_config_args(argv)
    except DaefrError as exc:
        print(f"daefr {argv[0] if argv else ''}: error: {exc}", file=sys.stderr)
        return 1
    sys.argv = [saved_argv[0] if saved_argv else "daefr", *expanded]
    try:
        DaefrCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # omegaconf+: ${...} interpolations resolve on the final config (all --config files and command
            # line overrides merged), so `${trainer.default_root_dir}/checkpoints` follows
            # --trainer.default_root_dir; a config may start with `config: base.yaml` to compose a base.
            parser_kwargs={"parser_mode": "omegaconf+", "exit_on_error": False},
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
