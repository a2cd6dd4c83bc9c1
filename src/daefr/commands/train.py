"""``daefr train CHAIN.yaml [KEY=VALUE ...]``: run a whole training chain (stages in order, resumable)."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train a chain of stages (e.g. configs/tiny/chain.yaml): skips finished stages, resumes an interrupted one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr train`` options to ``parser``."""
    parser.add_argument("chain", help="chain file: stage configs in order and how their checkpoints feed each other")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides for every stage (trainer.max_steps=100), or for one stage "
                             "(association.model.init_args.learning_rate=1e-4); values are YAML")
    from daefr.commands._options import add_output

    add_output(parser, "output folder (default: the chain file's 'out'); an existing one is resumed: finished "
               "stages are skipped, an interrupted one continues from its last.ckpt", old=("--out",))
    parser.add_argument("--rerun", action="append", default=[], metavar="STAGE",
                        help="train STAGE (and every later stage) again from scratch; repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each stage's configuration as it would run, and train nothing")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr train`` (run a training chain) with the parsed ``args``; returns the exit code."""
    from omegaconf import OmegaConf

    from daefr.chain import load_chain, process_rank, read_manifest, run_chain, stage_config
    from daefr.config_files import resolve_config_path

    chain = load_chain(resolve_config_path(args.chain), out=args.output, overrides=args.overrides)
    if args.dry_run:
        for stage in chain.stages:
            print(f"# ---- {stage.name} ({stage.config})")
            print(OmegaConf.to_yaml(stage_config(chain, stage)))
        return 0
    lead = process_rank() == 0  # under torchrun/SLURM every rank runs this command; rank 0 speaks
    done = read_manifest(chain).get("stages") or {}
    if done and lead:
        print(f"chain {chain.name!r}: resuming in {chain.out} (stages on record: {', '.join(done)}; finished "
              "ones with an unchanged config are skipped)")
    manifest = run_chain(chain, rerun=args.rerun)
    if not lead:
        return 0
    print(f"chain {chain.name!r} finished: {chain.out / 'chain.json'}")
    for name, record in manifest["stages"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(record.get("metrics", {}).items()) if "val/" in k)
        print(f"  {name:<14}{record['checkpoint']['path']}" + (f"  ({shown})" if shown else ""))
    return 0
