"""``daefr info GROUP/NAME``: signature, defaults and docstring of one component."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "show the signature, defaults and docstring of GROUP/NAME"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr info`` options to ``parser``."""
    parser.add_argument("component", help="GROUP/NAME, e.g. encoders/vqgan")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr info`` (describe one component) with the parsed ``args``; returns the exit code."""
    from daefr.errors import ConfigError
    from daefr.registry import describe

    group, sep, name = args.component.partition("/")
    if not sep or not name:
        raise ConfigError(f"expected GROUP/NAME such as encoders/vqgan, got {args.component!r}")
    print(describe(group, name))
    return 0
