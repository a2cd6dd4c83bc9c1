"""The embedded default job: train the demo chain, restore held-out faces, report against bicubic.

The demo chain trains on a folder of faces; held-out faces are restored and reported against bicubic
upsampling of the same low-quality input, on two sets when the data folder has both: ``val/`` (faces of the
sources it trains on, never trained on) and ``unseen/`` (faces of a source it never saw; the embedded
set holds FFHQ and CelebA-HQ faces while it trains on UTKFace and LFW).

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
    """Step counts (``None``: the chain file's), image size, training seed and the held-out test degradation."""

    steps: dict[str, int] | None = None
    image_size: int = 32
    seed: int = 0
    heldout: HeldOut = field(default_factory=lambda: HeldOut(size=32, metrics=("psnr", "ssim", "ids")))

    @classmethod
    def quick(cls) -> DemoSettings:
        """A ~2 minute run (CI): same chain, fewer steps."""
        return cls(steps={"hq_codebook": 250, "lq_codebook": 80, "association": 40, "restoration": 180})


def chain_steps(chain: Any) -> dict[str, int]:
    """Stage name -> ``trainer.max_steps`` as the chain file sets it."""
    shared = chain.overrides.get("trainer", {}).get("max_steps")
    return {s.name: int(s.overrides.get("trainer.max_steps", shared or 0)) for s in chain.stages}


def unseen_faces(data_dir: Path) -> list[Path]:
    """The faces of ``data_dir/unseen/`` (a source the training data does not hold), or none."""
    folder = data_dir / "unseen"
    return find_images(folder) if folder.is_dir() else []


def identity_metric_available() -> bool:
    """Whether the offline identity metric IDS can run here (dlib and its models: ``daefr[faces]``)."""
    from daefr.errors import WeightsNotFoundError

    try:
        from daefr.metrics.dlib_identity import DlibIdentity

        DlibIdentity()
    except (ImportError, WeightsNotFoundError):
        return False
    return True


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
    """Run the chain and the held-out evaluations; returns the summary written to ``out/summary.json``.

    ``summary["daefr"]``/``summary["bicubic"]`` score ``val/`` (held-out faces of the training sources);
    ``summary["unseen"]`` scores ``unseen/`` (a source never trained on) when the data folder has one.
    """
    from daefr.chain import run_chain
    from daefr.utils.io import atomic_write_text

    started = time.perf_counter()
    _quiet_lightning()
    train, val = split_data(data_dir)
    unseen = unseen_faces(data_dir)
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
    metrics = settings.heldout.metrics
    if "ids" in metrics and not identity_metric_available():
        log("note: identity similarity (IDS) skipped: it needs dlib and its models (pip install 'daefr[faces]')")
        metrics = tuple(m for m in metrics if m != "ids")
    # the test degradation has its own seed (settings.heldout.seed): runs of several training seeds share one test set
    heldout = replace(settings.heldout, size=settings.image_size, metrics=metrics)
    scores = _evaluate_set(val, weights, out, "", heldout, "held-out faces of the training sources")
    summary: dict[str, Any] = {
        "data": str(data_dir), "train_images": len(train), "heldout_images": len(val),
        "chain": str(chain.path), "settings": asdict(settings), "seconds": 0.0,
        "stage_seconds": {name: rec.get("seconds") for name, rec in manifest["stages"].items()},
        "stage_steps": {name: rec.get("global_step") for name, rec in manifest["stages"].items()},
        **scores,
        "outputs": {"restorer": str(weights), "report": str(out / "report" / "report.html"),
                    "comparison": str(out / "comparison" / "compare.html"), "restored": str(out / "restored"),
                    "training": str(chain.out / "chain.json")},
    }
    summary["beats_bicubic"] = _beats(scores, metrics)
    if unseen:
        unseen_scores = _evaluate_set(unseen, weights, out, "unseen_", heldout, "faces of a source never trained on")
        summary["unseen"] = {"images": len(unseen), **unseen_scores, "beats_bicubic": _beats(unseen_scores, metrics)}
        summary["outputs"]["unseen_comparison"] = str(out / "unseen_comparison" / "compare.html")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(str(out / "summary.json"), json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _evaluate_set(files: list[Path], weights: Path, out: Path, prefix: str, heldout: HeldOut,
                  what: str) -> dict[str, dict[str, float]]:
    """Degrade ``files`` once, restore them, and write the DAEFR report, the bicubic report and their comparison.

    Folders go to ``out/{prefix}testset``, ``{prefix}restored``, ``{prefix}report``, ``{prefix}report_bicubic``
    and ``{prefix}comparison``; returns ``{"daefr": scores, "bicubic": scores}``.
    """
    from daefr.metrics.report import evaluate_to_folder, write_comparison
    from daefr.metrics.suite import MetricsConfig

    test = build_heldout(files, heldout, out / f"{prefix}testset")
    restored_dir = out / f"{prefix}restored"
    restore_folder(weights, test["lq"], restored_dir, heldout.size)
    config = MetricsConfig(metrics=heldout.metrics)
    ours, _ = evaluate_to_folder(restored_dir, out / f"{prefix}report", gt_dir=test["gt"], lq_dir=test["bicubic"],
                                 config=config, title=f"daefr demo: tiny DAEFR on {what}",
                                 provenance={"weights": str(weights)})
    base, _ = evaluate_to_folder(test["bicubic"], out / f"{prefix}report_bicubic", gt_dir=test["gt"],
                                 lq_dir=test["lq"], config=config, title=f"daefr demo: bicubic upsampling, {what}")
    write_comparison(out / f"{prefix}report_bicubic", out / f"{prefix}report", out / f"{prefix}comparison",
                     title=f"bicubic (A) vs DAEFR (B), {what}")
    return {"daefr": _scores(ours.summary, heldout.metrics), "bicubic": _scores(base.summary, heldout.metrics)}


def _beats(scores: dict[str, dict[str, float]], metrics: tuple[str, ...]) -> bool:
    """DAEFR better than bicubic on every metric (in each metric's own direction)."""
    from daefr.metrics.suite import HIGHER_IS_BETTER

    def better(k: str) -> bool:
        ours, base = scores["daefr"][k], scores["bicubic"][k]
        return ours > base if HIGHER_IS_BETTER[k] else ours < base

    return all(better(k) for k in metrics)


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
