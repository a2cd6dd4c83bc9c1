"""``daefr experiment EXPERIMENT.yaml``: train chain variants over seeds, evaluate them on held-out faces, report."""

from __future__ import annotations

import argparse

NAME = "experiment"
HELP = "train several variants of a chain over seeds, evaluate on the same held-out faces, write a comparison report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr experiment`` options to ``parser``."""
    parser.add_argument("experiment", help="experiment file (see configs/experiments/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides for every variant's chain (KEY or STAGE.KEY, values are YAML)")
    from daefr.commands._options import add_output

    add_output(parser, "output folder (default: the file's 'out'); an existing one is resumed: finished chain "
               "stages are skipped", old=("--out",))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds instead of the file's (e.g. 0,1,2)")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr experiment`` (run an experiment's variants and report) with the parsed ``args``; returns the exit code."""
    import os

    from daefr.config_files import resolve_config_path
    from daefr.errors import ConfigError
    from daefr.experiment import load_experiment, run_experiment

    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    os.environ.setdefault("WANDB_MODE", "offline")  # never hang on a network that is not there
    experiment = load_experiment(resolve_config_path(args.experiment), out=args.output, seeds=seeds, overrides=args.overrides)
    result = run_experiment(experiment)
    print((experiment.out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {result['report']}")
    return 0
