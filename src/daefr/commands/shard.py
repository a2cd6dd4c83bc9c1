"""``daefr shard SRC OUT``: turn a folder (or list file) of face images into WebDataset tar shards.

Exit code: 0 when every input was sharded, 1 when some files were skipped (each listed with its reason
on stderr and in ``manifest.json``) or nothing usable was found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

NAME = "shard"
HELP = "write WebDataset shards (+ manifest.json) from a folder or list of face images"


def _size(text: str) -> int:
    """Parse 1000, 64K, 512M, 1G (binary units) into bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr shard`` options to ``parser``."""
    from daefr.commands._options import add_force, add_no_progress, add_output, add_positional_alias

    parser.add_argument("src", help="folder of images (recursive; lq/ + gt/ for paired sets) or a list file")
    add_output(parser, "output folder for the shards and manifest.json (files shard did not write are refused "
               "unless --force; its own earlier run there is redone)")
    add_positional_alias(parser, "output", "-o/--output")
    parser.add_argument("--size", type=int, default=None,
                        help="resize the shorter side to SIZE and centre-crop SIZE x SIZE (default: keep)")
    parser.add_argument("--store", choices=("png", "source"), default="png",
                        help="png: lossless re-encode (default); source: the original file bytes")
    parser.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most (default 1000)")
    parser.add_argument("--maxsize", type=_size, default=1 << 30,
                        help="bytes per shard file at most, e.g. 512M (default 1G); a shard holds at least one sample")
    parser.add_argument("--min-size", type=int, default=16,
                        help="skip images whose shorter side is below this (default 16)")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix (default 'shard')")
    parser.add_argument("--paired", action="store_true",
                        help="SRC holds lq/ and gt/ with the same names (auto-detected when both exist)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes that decode and encode images (default: CPU count, at most 8)")
    add_force(parser, "write beside files shard did not write (they are kept, never deleted; manifest.json is "
                      "replaced)")
    add_no_progress(parser, old=("--quiet",))


REQUIRED = ("output",)


def run(args: argparse.Namespace) -> int:
    """Run ``daefr shard`` (write WebDataset shards) with the parsed ``args``; returns the exit code."""
    from pathlib import Path

    from tqdm import tqdm

    from daefr.data.shards import ShardOptions, write_shards
    from daefr.utils.batch import BatchFailure, BatchSummary

    # The output-folder rule of shard (daefr.data.shards): files it did not write are refused unless
    # --force (and never deleted); its own earlier run, listed in its manifest.json, is redone: said here.
    out = Path(args.output)
    earlier = _earlier_run(out / "manifest.json")
    started = time.perf_counter()

    options = ShardOptions(size=args.size, store=args.store, maxcount=args.maxcount, maxsize=args.maxsize,
                           min_size=args.min_size, prefix=args.prefix, workers=max(1, args.workers))

    def bar(stream, total):  # type: ignore[no-untyped-def]
        return tqdm(stream, total=total, unit="img", desc="sharding", disable=args.no_progress, file=sys.stderr)

    manifest = write_shards(Path(args.src), out, options,
                            paired=True if args.paired else None, progress=bar, force=args.force)
    if earlier:
        print(f"daefr shard: {out} held an earlier run ({earlier} shards in its manifest.json); redone: its shards "
              f"of prefix {args.prefix} were replaced", file=sys.stderr)
    summary = BatchSummary(
        ok=manifest["total"],
        failures=tuple(BatchFailure(e["file"], e["reason"]) for e in manifest["skipped"]),
        seconds=time.perf_counter() - started,
    )
    print(summary.report("images sharded"), file=sys.stderr)
    print(f"wrote {manifest['total']} samples in {len(manifest['shards'])} shards to {out} "
          f"({manifest['pattern']}); {summary.failed} files skipped (listed in {out / 'manifest.json'})")
    if manifest["total"] == 0:
        print("daefr shard: error: no usable images", file=sys.stderr)
    return summary.exit_code if manifest["total"] else 1


def _earlier_run(manifest: object) -> int:
    """How many shards a ``daefr shard`` manifest lists (0 when there is none or it is not ours)."""
    import json
    from pathlib import Path

    from daefr.data.shards import MANIFEST_FORMAT

    path = Path(str(manifest))
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("shards"), list):
        return 0
    return len(data["shards"])
