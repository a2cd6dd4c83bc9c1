"""Throughput of the data pipeline: shards vs a folder of PNGs, and today's code vs an earlier revision.

    .venv/bin/python benchmarks/data.py                  # 256 faces at 128 px, 3 timed passes each
    .venv/bin/python benchmarks/data.py --write          # also update the "## Data" section of RESULTS.md
    .venv/bin/python benchmarks/data.py --before REV     # compare with the data code of git revision REV

Every source holds the same PNG files (the shards are written by ``daefr shard`` from the folder, so
the bytes decoded are identical) and goes through ``FaceDataset`` (decode -> RGB -> tensor in [-1, 1]
-> batch of 16) in two modes: ``val`` (each image once, as validation reads them) and ``train``
(equalised pass with a 64-sample shuffle buffer and flips). "before" is ``daefr.data`` as it was at
``--before`` (imported from ``git show`` into a temporary package, read through a plain DataLoader as it
was then); "after" is the working tree (webdataset's tar iterators and shuffle, torchdata's
StatefulDataLoader as ``FaceDataModule`` builds it). A pass reads every image once; the figure is the
median images/second of ``--repeats`` passes after one warm-up pass, with the sources taking turns so
that load from other processes hits all alike.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Data"
BEFORE = "b4dde78"  # the data code before the webdataset / torchdata migration (issue 20)
MODULES = ("decode", "split", "sources", "dataset")

from daefr.data.datamodule import EpochDataLoader  # noqa: E402
from daefr.data.dataset import FaceDataset  # noqa: E402
from daefr.data.shards import ShardOptions, write_shards  # noqa: E402
from daefr.data.sources import FolderSource, ShardSource  # noqa: E402


def import_before(rev: str, tmp: Path) -> dict[str, Any]:
    """``daefr.data``'s reading modules as of git revision ``rev``, as a package ``daefr_data_before``."""
    package = tmp / "daefr_data_before"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        text = subprocess.run(["git", "show", f"{rev}:src/daefr/data/{name}.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (package / f"{name}.py").write_text(text.replace("daefr.data.", "daefr_data_before."))
    sys.path.insert(0, str(tmp))
    return {name: importlib.import_module(f"daefr_data_before.{name}") for name in MODULES}


def make_corpus(folder: Path, n: int, size: int) -> None:
    """``n`` PNG faces of ``size`` px from ../shared/data/faces/train_utkface (noise if it is absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = sorted((ROOT.parent / "shared" / "data" / "faces" / "train_utkface").glob("*.jpg"))
    rng = np.random.default_rng(0)
    for i in range(n):
        if faces:
            image = Image.open(faces[i % len(faces)]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        else:
            image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        image.save(folder / f"face{i:05d}.png")


def one_pass(dataset: Any, workers: int, stateful: bool) -> tuple[float, int]:
    """Seconds for a full pass and the number of images it yielded."""
    dataset.set_context(0, 1, 0, workers)
    start = time.perf_counter()
    loader = EpochDataLoader(dataset, batch_size=None, num_workers=workers) if stateful else \
        DataLoader(dataset, batch_size=None, num_workers=workers)
    count = sum(len(batch["key"]) for batch in loader)
    return time.perf_counter() - start, count


MODE_OPTIONS = {"val": {"name": "val"}, "train": {"name": "train", "equalize": True, "shuffle_buffer": 64, "flip": True}}
COLUMNS = ("folder", "shards before", "shards after")


def run(n: int, size: int, repeats: int, workers_list: list[int], before: str) -> list[tuple[str, int, list[float]]]:
    """(mode, workers, median images/s per COLUMNS)."""
    with tempfile.TemporaryDirectory() as tmp:
        old = import_before(before, Path(tmp))
        folder, shards = Path(tmp) / "png", Path(tmp) / "shards"
        make_corpus(folder, n, size)
        write_shards(folder, shards, ShardOptions(store="source", maxcount=64))
        makers = {
            "folder": (lambda o: FaceDataset(FolderSource(folder), 16, size, **o), True),
            "shards before": (lambda o: old["dataset"].FaceDataset(old["sources"].ShardSource(str(shards)), 16, size,
                                                                   **o), False),
            "shards after": (lambda o: FaceDataset(ShardSource(str(shards)), 16, size, **o), True),
        }
        rows = []
        for mode, options in MODE_OPTIONS.items():
            for workers in workers_list:
                rates: dict[str, list[float]] = {name: [] for name in COLUMNS}
                for rep in range(repeats + 1):
                    order = COLUMNS[rep % 3:] + COLUMNS[:rep % 3]
                    for name in order:
                        make, stateful = makers[name]
                        seconds, count = one_pass(make(options), workers, stateful)
                        expected = n if mode == "val" else n // 16 * 16
                        assert count == expected, f"{name} yielded {count} of {expected} images"
                        if rep > 0:  # the first pass warms caches and worker start-up paths
                            rates[name].append(count / seconds)
                medians = [statistics.median(rates[name]) for name in COLUMNS]
                rows.append((mode, workers, medians))
                print(f"{mode} workers={workers}: " + ", ".join(f"{c} {m:.0f} img/s" for c, m in zip(COLUMNS, medians))
                      + f"; after/before {medians[2] / medians[1]:.2f}x", flush=True)
    return rows


def render(rows: list[tuple[str, int, list[float]]], args: argparse.Namespace) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python benchmarks/data.py --n {args.n} --size {args.size} --repeats {args.repeats}"
        f" --before {args.before}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared; 1-min load average {load:.1f} at the end), "
        f"Python {platform.python_version()}, torch {torch.__version__}. Median of {args.repeats} passes after a warm-up.",
        "",
        f"{args.n} PNG faces of {args.size} px into batches of 16 (`FaceDataset`); `val`: each image once, `train`: "
        "equalised pass, 64-sample shuffle buffer, flips. \"shards before\": the hand-written tar reader and "
        f"shuffle of `{args.before}` through a plain DataLoader; \"shards after\": webdataset's tar iterators and "
        "shuffle through torchdata's StatefulDataLoader (as `FaceDataModule` now reads).",
        "",
        "| mode | workers | folder of PNGs (img/s) | shards before (img/s) | shards after (img/s) | after / before |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {m} | {w} | {f:.0f} | {b:.0f} | {a:.0f} | {a / b:.2f}x |" for m, w, (f, b, a) in rows]
    lines += [
        "",
        "On a local disk with a warm page cache all sources decode the same PNG bytes, so the figures are",
        "close; the shards' advantage is in I/O (one sequential read per 64 images instead of one open per",
        "image), which matters on network file systems and object stores that this machine does not have.",
        "Extra workers help only when free cores exist: this machine has 2 cores shared with other jobs.",
        "In `train` mode the earlier code decoded samples before its shuffle buffer, so each worker decoded up",
        "to `shuffle_buffer` samples past its quota that were never used; the webdataset pipeline shuffles the",
        "undecoded bytes and decodes after the buffer. The StatefulDataLoader's per-batch state costs nothing",
        "measurable here. Differences of about 10% are within this shared machine's noise.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    """Replace (or append) the ``## Data`` section of RESULTS.md, leaving other sections alone."""
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmark results", ""]
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        lines = lines + [""] + text.splitlines()
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + text.splitlines() + lines[end:]
    path.write_text("\n".join(lines).rstrip() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images in the corpus")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--before", default=BEFORE, help=f"git revision of the 'before' data code (default {BEFORE})")
    parser.add_argument("--write", action="store_true", help="update the Data section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.n, args.size, args.repeats, args.workers, args.before)
    text = render(rows, args)
    print(text)
    if args.write:
        write_section(text, ROOT / "benchmarks" / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
