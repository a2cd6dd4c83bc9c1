"""The embedded default job: train the demo chain, restore held-out faces, report against bicubic.

The demo chain trains on a folder of faces; held-out faces are restored and reported
against bicubic upsampling of the same low-quality input.

The training is the chain ``configs/demo/chain.yaml`` (run with :func:`daefr.chain.run_chain`, exactly as
``daefr train`` would); this module only stages the data, sets the step counts and evaluates
(:mod:`daefr.heldout`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from daefr.errors import ConfigError
from daefr.heldout import HeldOut, build_heldout, find_images, load_square, restore_folder

ASSETS = Path(__file__).resolve().parent / "assets" / "demo_faces"


def demo_chain_file() -> Path:
    """``configs/demo/chain.yaml``: in the installed package, else in the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs" / "demo" / "chain.yaml", here.parents[1] / "configs" / "demo" / "chain.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("configs/demo/chain.yaml is missing from this installation; reinstall daefr")


@dataclass
class DemoSettings:
    """Step counts (``None``: the chain file's), image size, seed and the held-out test degradation."""

    steps: dict[str, int] | None = None
    image_size: int = 32
    seed: int = 0
    heldout: HeldOut = field(default_factory=lambda: HeldOut(size=32, metrics=("psnr", "ssim")))

    @classmethod
    def quick(cls) -> DemoSettings:
        """A ~2 minute run (CI): same chain, fewer steps."""
        return cls(steps={"hq_codebook": 250, "lq_codebook": 80, "association": 40, "restoration": 180})


def chain_steps(chain: Any) -> dict[str, int]:
    """Stage name -> ``trainer.max_steps`` as the chain file sets it."""
    shared = chain.overrides.get("trainer", {}).get("max_steps")
    return {s.name: int(s.overrides.get("trainer.max_steps", shared or 0)) for s in chain.stages}


def split_data(data_dir: Path, val_fraction: float = 0.1) -> tuple[list[Path], list[Path]]:
    """Training and held-out images: ``train/`` + ``val/`` sub-folders, or a deterministic split of one folder."""
    if not data_dir.is_dir():
        raise ConfigError(f"demo data folder {data_dir} does not exist; pass --data DIR with face images")
    train_dir, val_dir = data_dir / "train", data_dir / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        train, val = find_images(train_dir), find_images(val_dir)
    else:
        images = find_images(data_dir)
        random.Random(0).shuffle(images)
        cut = max(1, int(round(len(images) * val_fraction)))
        val, train = sorted(images[:cut]), sorted(images[cut:])
    if len(train) < 16 or len(val) < 2:
        raise ConfigError(f"{data_dir}: need at least 16 training and 2 held-out face images "
                          f"(found {len(train)} and {len(val)}); use train/ and val/ sub-folders or one folder")
    return train, val


def _stage_files(files: list[Path], folder: Path, size: int) -> Path:
    """Copy the chosen images, centre-cropped and resized to ``size``, into ``folder`` (PNG)."""
    from daefr.utils.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        write_image(folder / f"{path.stem}.png", load_square(path, size))
    return folder


def demo_chain(out: Path, settings: DemoSettings, train_dir: Path, val_dir: Path, logger_kind: str = "csv") -> Any:
    """The demo chain writing into ``out/training``, on the staged data, with the settings' steps."""
    from daefr.chain import load_chain

    chain = load_chain(demo_chain_file(), out=out / "training")
    steps = dict(chain_steps(chain), **(settings.steps or {}))
    items = [f"data.init_args.train={json.dumps(str(train_dir))}", f"data.init_args.val={json.dumps(str(val_dir))}",
             f"data.init_args.image_size={settings.image_size}"]
    items += [f"{name}.trainer.max_steps={n}" for name, n in steps.items()]
    if logger_kind == "wandb":
        logger = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "daefr-demo",
                                                                                      "offline": True}}
        items.append(f"trainer.logger={json.dumps(logger)}")
    return replace(load_chain(demo_chain_file(), out=out / "training", overrides=items), seed=settings.seed)


def run_demo(data_dir: Path, out: Path, settings: DemoSettings, logger_kind: str = "csv",
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the chain and the held-out evaluation; returns the summary written to ``out/summary.json``."""
    from daefr.chain import run_chain
    from daefr.metrics.report import evaluate_to_folder, write_comparison
    from daefr.metrics.suite import MetricsConfig
    from daefr.utils.io import atomic_write_text

    started = time.perf_counter()
    _quiet_lightning()
    train, val = split_data(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_dir = _stage_files(train, out / "data" / "train", settings.image_size)
    val_dir = _stage_files(val, out / "data" / "val", settings.image_size)
    chain = demo_chain(out, settings, train_dir, val_dir, logger_kind)
    manifest = run_chain(chain, say=log)
    trained = Path(manifest["stages"]["restoration"]["restorer"]["path"])
    weights = out / "restorer.safetensors"
    partial = out / ".restorer.safetensors.tmp"
    shutil.copyfile(trained, partial)
    os.replace(partial, weights)
    heldout = replace(settings.heldout, size=settings.image_size, seed=settings.seed)
    test = build_heldout(val, heldout, out / "testset")
    restored_dir = out / "restored"
    restore_folder(weights, test["lq"], restored_dir, settings.image_size)
    config = MetricsConfig(metrics=heldout.metrics)
    ours, _ = evaluate_to_folder(restored_dir, out / "report", gt_dir=test["gt"], lq_dir=test["bicubic"],
                                 config=config, title="daefr demo: tiny DAEFR on held-out faces",
                                 provenance={"weights": str(weights)})
    base, _ = evaluate_to_folder(test["bicubic"], out / "report_bicubic", gt_dir=test["gt"], lq_dir=test["lq"],
                                 config=config, title="daefr demo: bicubic upsampling baseline")
    write_comparison(out / "report_bicubic", out / "report", out / "comparison", title="bicubic (A) vs DAEFR (B)")
    scores = {"daefr": _scores(ours.summary, heldout.metrics), "bicubic": _scores(base.summary, heldout.metrics)}
    summary: dict[str, Any] = {
        "data": str(data_dir), "train_images": len(train), "heldout_images": len(val),
        "chain": str(chain.path), "settings": asdict(settings), "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": {name: rec.get("seconds") for name, rec in manifest["stages"].items()},
        "stage_steps": {name: rec.get("global_step") for name, rec in manifest["stages"].items()},
        **scores,
        "outputs": {"restorer": str(weights), "report": str(out / "report" / "report.html"),
                    "comparison": str(out / "comparison" / "compare.html"), "restored": str(restored_dir),
                    "training": str(chain.out / "chain.json")},
    }
    summary["beats_bicubic"] = all(scores["daefr"][k] > scores["bicubic"][k] for k in heldout.metrics)
    atomic_write_text(str(out / "summary.json"), json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _quiet_lightning() -> None:
    """Keep the demo's output short: Lightning's start-up notes go to the log level only."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: set them after it)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # the restoration stage keeps its frozen HQ codebook, decoder and target branch in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*ModelCheckpoint with manual optimization.*")


def _scores(values: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, float]:
    """The held-out metrics of an evaluation summary as plain floats (NaN when a metric is missing)."""
    return {k: float(values[k]) if values.get(k) is not None else float("nan") for k in metrics}
