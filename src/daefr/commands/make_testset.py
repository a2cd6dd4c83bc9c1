"""``daefr make-testset``: degrade a folder of HQ faces into a paired LQ/GT test set (CelebA-Test style).

Each image gets its own generator seeded from ``--seed`` and its file name, so an image's degradation
does not depend on which other files are in the folder. Writes ``OUT/gt/NAME.png``,
``OUT/lq/NAME.png``, ``OUT/params/NAME.json`` (the exact degradation parameters, replayable with
``Degradation.replay``) and ``OUT/manifest.json``. A non-empty ``OUT`` is refused unless --force; with
--force the set is rebuilt: files of an earlier set in gt/, lq/ and params/ that this run does not write
are removed (and counted), so the folders always hold exactly the manifest's images. An unreadable image is skipped with a one-line
reason (listed under ``skipped`` in the manifest); the set holds every readable image and the exit
code is 1 when any was skipped, as in the other batch commands.
"""

from __future__ import annotations

import argparse

NAME = "make-testset"
HELP = "degrade a folder of HQ faces with a named preset and fixed seed into a paired LQ/GT set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr make-testset`` options to ``parser``."""
    from daefr.commands._options import add_device, add_force, add_no_progress, add_output

    parser.add_argument("--hq", required=True, help="folder of high-quality (aligned) faces")
    add_output(parser, "output folder (gt/, lq/, params/, manifest.json); a non-empty one is refused unless --force",
               old=("--out",))
    add_force(parser, "rebuild the set in a non-empty folder (an earlier set's gt/lq/params files are removed)")
    add_no_progress(parser)
    parser.add_argument("--preset", default="daefr_large",
                        help="degradation preset from the `degradations` registry group (default daefr_large)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--size", type=int, default=None, help="resize HQ faces to SIZE x SIZE first (bicubic)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    add_device(parser, "the degradation")


REQUIRED = ("output",)


def image_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from the base seed and the file stem (stable across runs and platforms)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def params_to_json(params: dict[str, object]) -> dict[str, object]:
    """Per-sample parameter tensors of a batch of one -> plain JSON values."""
    import torch

    out: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, torch.Tensor):
            item = value[0]
            out[key] = item.item() if item.dim() == 0 else item.tolist()
        else:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``daefr make-testset`` (degrade HQ faces into a paired test set) with the parsed ``args``; returns the exit code."""
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from daefr import __version__
    from daefr.errors import ConfigError, ImageReadError
    from daefr.metrics.images import list_images, read_rgb8, write_rgb8
    from daefr.registry import REGISTRY
    from daefr.utils.batch import BatchTracker

    if args.size is not None and args.size < 16:
        raise ConfigError(f"--size must be at least 16, got {args.size}")
    files = list_images(args.hq)
    if args.limit is not None:
        files = files[: max(0, args.limit)]
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        raise ConfigError(f"{args.hq!r} has several images with the same name and different extensions")
    from daefr.commands._options import resolve_device
    from daefr.commands._restore_run import has_visible_files

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    if not args.force and has_visible_files(out):
        raise ConfigError(f"--output {out} is not empty; pass --force to rebuild the set there (an earlier set's "
                          "gt/, lq/ and params/ files are removed) or choose an empty folder")
    degradation = REGISTRY.build("degradations", args.preset).to(resolve_device(args.device))
    from daefr.utils.io import clean_orphaned_temps

    for sub in ("gt", "lq", "params"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        clean_orphaned_temps(out / sub)  # left by a run killed mid-write
    clean_orphaned_temps(out, "manifest.json")
    keep = {f"{name}{ext}" for name in names for ext in (".png", ".json")}
    stale = [p for sub in ("gt", "lq", "params") for p in sorted((out / sub).iterdir())
             if p.is_file() and not p.is_symlink() and p.name not in keep and not p.name.startswith(".")]
    for path in stale:  # an earlier set's files (--force): the folders hold exactly this set
        path.unlink()
    if stale:
        print(f"removed {len(stale)} file(s) of an earlier set from {out}/{{gt,lq,params}}")
    device = resolve_device(args.device)
    tracker = BatchTracker()
    done: list[str] = []
    for index, file in enumerate(files):
        try:
            hq = read_rgb8(file)
        except (ImageReadError, OSError, ValueError) as exc:
            tracker.failed(file, exc)
            print(f"[{index + 1}/{len(files)}] {file.name}: skipped ({tracker.failures[-1].reason})")
            continue
        if args.size is not None and hq.shape[:2] != (args.size, args.size):
            hq = np.array(Image.fromarray(hq).resize((args.size, args.size), Image.Resampling.BICUBIC))
        seed = image_seed(args.seed, file.stem)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.from_numpy(hq).permute(2, 0, 1)[None].float().div(255.0).to(device)
        with torch.no_grad():
            result = degradation(x, generator=gen)
        lq = (result.lq[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        write_rgb8(out / "gt" / f"{file.stem}.png", hq)
        write_rgb8(out / "lq" / f"{file.stem}.png", lq)
        record = {"name": file.stem, "source": str(file), "preset": args.preset, "seed": seed,
                  "size": list(hq.shape[:2]), "params": params_to_json(result.params)}
        _write_json(out / "params" / f"{file.stem}.json", record)
        if not args.no_progress:
            print(f"[{index + 1}/{len(files)}] {file.name}")
        tracker.succeeded(file)
        done.append(file.stem)
    summary = tracker.summary()
    manifest = {"format": "daefr-testset/1", "daefr_version": __version__, "preset": args.preset,
                "preset_repr": repr(degradation), "base_seed": args.seed, "size": args.size,
                "source": str(args.hq), "images": done,
                "skipped": [{"file": f.item, "reason": f.reason} for f in summary.failures],
                "seeding": "per image: sha256('{base_seed}:{name}') first 8 bytes, little endian, 63 bits"}
    _write_json(out / "manifest.json", manifest)
    print(f"wrote {len(done)} LQ/GT pairs to {out}")
    if summary.failed:
        print(summary.report("images degraded"))
    return summary.exit_code


def _write_json(path: object, data: object) -> None:
    import json

    from daefr.utils.io import atomic_write_text

    atomic_write_text(str(path), json.dumps(data, indent=2) + "\n")
