"""``daefr demo``: the embedded default job (train the tiny DAEFR chain, restore held-out faces, report)."""

from __future__ import annotations

import argparse

from daefr.commands._options import add_output

NAME = "demo"
HELP = "train the whole tiny DAEFR chain on the embedded faces (or --data DIR) and report vs bicubic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr demo`` options to ``parser``."""
    parser.add_argument("--data", default=None,
                        help="face images: a folder with train/ and val/ sub-folders, or one folder (10%% held out); "
                             "default: the embedded demo faces")
    add_output(parser, "output folder (default runs/demo)", default="runs/demo", old=("--out",))
    parser.add_argument("--quick", action="store_true", help="a ~2 minute run with fewer steps (used in CI)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps by this")
    parser.add_argument("--logger", choices=("csv", "wandb"), default="csv",
                        help="csv (default) or wandb (offline unless WANDB_MODE says otherwise)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (default 0); the held-out faces are degraded the same way for every seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--force", action="store_true", help="reuse a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    """Run ``daefr demo`` (run the embedded demo job) with the parsed ``args``; returns the exit code."""
    import json
    import os
    from dataclasses import replace
    from pathlib import Path

    import torch

    from daefr.chain import load_chain
    from daefr.demo import ASSETS, DemoSettings, chain_steps, demo_chain_file, run_demo
    from daefr.errors import ConfigError

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"output folder {out} is not empty; choose another --output or pass --force")
    if args.steps_scale <= 0:
        raise ConfigError(f"--steps-scale must be positive, got {args.steps_scale}")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    settings = replace(DemoSettings.quick() if args.quick else DemoSettings(), seed=args.seed)
    if args.steps_scale != 1.0:
        steps = settings.steps or chain_steps(load_chain(demo_chain_file()))
        settings = replace(settings, steps={k: max(1, round(v * args.steps_scale)) for k, v in steps.items()})
    data = Path(args.data) if args.data else ASSETS
    summary = run_demo(data, out, settings, logger_kind=args.logger)
    print(f"\ndaefr demo finished in {summary['seconds']:.0f} s ({summary['train_images']} training faces)")
    _print_scores(f"held out, training sources ({summary['heldout_images']} faces)", summary)
    if "unseen" in summary:
        _print_scores(f"held out, unseen source ({summary['unseen']['images']} faces)", summary["unseen"])
    for label, path in summary["outputs"].items():
        print(f"  {label:<18}{path}")
    print(f"  {'summary':<18}{out / 'summary.json'}")
    if not summary["beats_bicubic"] or not summary.get("unseen", {}).get("beats_bicubic", True):
        print("note: the restorer did not beat bicubic on every metric; train longer (--steps-scale 2)")
    json.dumps(summary)  # fail loudly here rather than later if the summary is not serialisable
    return 0


def _print_scores(title: str, scores: dict[str, dict[str, float]]) -> None:
    """One line per metric: DAEFR against bicubic."""
    print(f"  {title}:")
    units = {"psnr": " dB", "ssim": "", "ids": ""}
    for key, value in scores["daefr"].items():
        label = f"held-out {key.upper()}"
        print(f"    {label:<14} DAEFR {value:.4f}{units.get(key, '')}   bicubic {scores['bicubic'][key]:.4f}"
              f"{units.get(key, '')}")
