"""``daefr info GROUP/NAME``: signature, defaults and docstring of one component."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "show the signature, defaults and docstring of GROUP/NAME"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", help="GROUP/NAME, e.g. encoders/vqgan")


def run(args: argparse.Namespace) -> int:
    from daefr.errors import ConfigError
    from daefr.registry import describe

    group, sep, name = args.component.partition("/")
    if not sep or not name:
        raise ConfigError(f"expected GROUP/NAME such as encoders/vqgan, got {args.component!r}")
    print(describe(group, name))
    return 0
