"""The ``daefr`` command: Lightning subcommands (fit/validate/test/predict) plus daefr's own tools.

Each extra subcommand is a module in :mod:`daefr.commands` that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules there are found automatically and must
import heavy dependencies inside ``run`` so that ``daefr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

import daefr.commands as commands_pkg
from daefr.errors import DaefrError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _command_modules() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        found[str(module.NAME)] = module
    return found


def _usage(modules: dict[str, ModuleType]) -> str:
    lines = ["usage: daefr <command> [options]", "", "Training (LightningCLI; see `daefr fit --help`):"]
    lines += [f"  {name:<16}{_LIGHTNING_HELP[name]}" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "Tools:"]
    lines += [f"  {name:<16}{mod.HELP}" for name, mod in modules.items()]
    lines += ["", "Run `daefr <command> --help` for the options of one command."]
    return "\n".join(lines)


_LIGHTNING_HELP = {
    "fit": "train a stage from a YAML config (--config, --print_config, dotted overrides)",
    "validate": "run the validation loop of a stage",
    "test": "run the test loop of a stage",
    "predict": "run prediction with a stage",
}


def main(args: Sequence[str] | None = None) -> int:
    """Entry point; ``args`` excludes the program name. Returns the exit code."""
    argv = list(sys.argv[1:] if args is None else args)
    modules = _command_modules()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(modules))
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from daefr import __version__

        print(f"daefr {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        from daefr.lightning_cli import run_lightning

        return run_lightning(argv)
    if command not in modules:
        choices = list(LIGHTNING_SUBCOMMANDS) + list(modules)
        close = difflib.get_close_matches(command, choices, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"daefr: unknown command {command!r}.{hint} Run `daefr --help` for the list.", file=sys.stderr)
        return 2
    module = modules[command]
    parser = argparse.ArgumentParser(prog=f"daefr {command}", description=module.HELP)
    module.add_arguments(parser)
    ns = parser.parse_intermixed_args(rest)  # options may follow positional lists (`train CHAIN a=1 --out D`)
    from daefr.commands._options import finish

    finish(parser, ns, tuple(getattr(module, "REQUIRED", ())))  # old positional spellings; required options
    try:
        return int(module.run(ns) or 0)
    except DaefrError as exc:
        print(f"daefr {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
