"""``daefr list [GROUP]``: registered components, without importing any plugin."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = "list registered components (name, source, target, description)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr list`` options to ``parser``."""
    parser.add_argument("group", nargs="?", help="one registry group (default: all groups)")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr list`` (list the registered components) with the parsed ``args``; returns the exit code."""
    from daefr.registry import GROUPS, REGISTRY

    groups = [args.group] if args.group else list(GROUPS)
    for group in groups:
        entries = REGISTRY.entries(group)
        print(f"{group}:")
        if not entries:
            print("  (none)")
        for e in entries:
            source = f"{e.source} {e.version}".strip()
            print(f"  {e.name:<20} {e.description}")
            print(f"  {'':<20} {e.target}  [{source}]")
    return 0
