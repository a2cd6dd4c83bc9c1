"""``daefr convert -w official.ckpt -o out.safetensors``: official DAEFR checkpoint -> our safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "convert"
HELP = "convert an official DAEFR checkpoint (.ckpt) to safetensors with daefr's key names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr convert`` options to ``parser``."""
    from daefr.commands._options import add_force, add_output, add_positional_alias, add_weights

    add_weights(parser, None, "official checkpoint: DAEFR_model.ckpt, HQ/LQ_codebook.ckpt, Association_stage.ckpt")
    add_output(parser, "safetensors file to write (refused if it exists, unless --force)")
    add_positional_alias(parser, "weights", "-w/--weights")  # `convert SOURCE OUTPUT`, before 0.2
    add_positional_alias(parser, "output", "-o/--output")
    parser.add_argument("--kind", default="auto", choices=["auto", "daefr", "codebook", "association"],
                        help="checkpoint kind (default: detected from the keys)")
    parser.add_argument("--arch", default="auto",
                        help="architecture: auto (read off the checkpoint shapes), full, tiny, "
                             "a JSON object of official config keywords, or a .json file")
    add_force(parser, "replace OUTPUT if it exists")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every mapped key")


REQUIRED = ("weights", "output")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr convert`` (convert an official checkpoint to safetensors) with the parsed ``args``; returns the exit code."""
    from daefr.interop.convert import convert_official
    from daefr.utils.io import clean_orphaned_temps, refuse_input_as_output

    refuse_input_as_output(args.output, args.weights, "OUTPUT")
    clean_orphaned_temps(Path(args.output).parent, Path(args.output).name)  # left by a run killed mid-write
    result = convert_official(args.weights, args.output, kind=args.kind, arch=args.arch, overwrite=args.force)
    rep = result.report
    print(f"{args.weights}: {result.kind} checkpoint -> {result.path} ({result.n_tensors} tensors)")
    print(rep.summary())
    print(f"mapped {len(rep.mapped) + len(rep.name_only)}, not exported {len(rep.not_loaded) + len(rep.ignored)}, "
          f"missing {len(rep.missing)}, unexpected {len(rep.unmatched)}")
    if args.verbose:
        for official, ours in {**rep.mapped, **rep.name_only}.items():
            print(f"  {official} -> {ours}")
    return 0
