"""The embedded default job: train the whole tiny DAEFR chain on a folder of faces, restore held-out faces
and report against bicubic upsampling of the same low-quality input.

Stages run in-process with Lightning, one after the other, each initialised from the previous ones
exactly as in the paper (HQ codebook, LQ codebook -> association -> restoration).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from daefr.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets" / "demo_faces"
STAGES = ("hq_codebook", "lq_codebook", "association", "restoration")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class DemoSettings:
    """Sizes, steps and degradations of the demo chain (the defaults fit 15 minutes on 2 CPU cores)."""

    image_size: int = 32
    batch_size: int = 8
    steps: dict[str, int] = field(default_factory=lambda: {
        "hq_codebook": 1200, "lq_codebook": 250, "association": 100, "restoration": 1200})
    ch: int = 32
    # three levels: an 8x8 latent, one code per 4x4 pixels = one pixel of the 4x-downscaled test input.
    # With two levels (16x16 codes of 2x2 pixels) the codes carry detail the LQ input has lost: the
    # predictor reached 14% code accuracy and 18.4 dB although those codes could reconstruct 23.5 dB.
    ch_mult: tuple[int, ...] = (1, 2, 2)
    z_channels: int = 64
    n_embed: int = 256  # 1024 codes reconstruct a little better but are much harder to predict (README)
    # the official quantizer collapses on a few hundred faces (about 15 of 256 codes in use after 300
    # steps here, reconstruction 19.2 dB); the EMA codebook with dead-code restart keeps all codes (21.5 dB)
    codebook: str = "ema"
    learning_rate: float = 4e-4
    # cosine decay in every stage: 19.46 dB held out, against 18.8-19.0 dB with a constant rate (README)
    lr_scheduler: dict[str, Any] | None = field(default_factory=lambda: {
        "name": "cosine", "warmup_steps": 20, "min_lr_ratio": 0.05})
    disc_start_fraction: float = 1.0  # the GAN term needs more than CPU-minutes to help; >= 1 keeps it off
    transformer_layers: int = 2
    transformer_dim: int = 128
    # training degradation (stages 1-3) and the fixed test degradation of the held-out faces
    train_degradation: dict[str, Any] = field(default_factory=lambda: {
        "name": "degradation", "sigma_range": [0.2, 2.0], "scale_range": [1.5, 4.0],
        "noise_range": [0.0, 10.0], "jpeg_range": [60, 95], "kernel_sizes": [7, 9]})
    test_scale: int = 4
    test_sigma: tuple[float, float] = (0.5, 1.5)
    test_noise: tuple[float, float] = (2.0, 8.0)
    test_jpeg: tuple[int, int] = (70, 90)
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        """A ~2 minute run (CI): same chain, fewer steps."""
        return cls(steps={"hq_codebook": 250, "lq_codebook": 80, "association": 40, "restoration": 180})


# ----------------------------------------------------------------------------------------------- data
def find_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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


def load_square(path: Path, size: int) -> np.ndarray:
    """An RGB image resized and centre-cropped to a ``size`` square (as the data module does), uint8."""
    from daefr.data.decode import resize_center_crop
    from daefr.utils.images import read_image

    return np.asarray(resize_center_crop(Image.fromarray(read_image(path)), size))


def degrade_test_image(hq: np.ndarray, settings: DemoSettings, seed: int) -> np.ndarray:
    """Fixed-seed test degradation: blur -> downscale by ``test_scale`` -> noise -> JPEG; returns the small LQ."""
    import io

    rng = np.random.default_rng(seed)
    x = torch.tensor(hq).permute(2, 0, 1)[None].float() / 255.0
    sigma = float(rng.uniform(*settings.test_sigma))
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    small = hq.shape[0] // settings.test_scale
    x = F.interpolate(x, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    x = (x + noise * float(rng.uniform(*settings.test_noise)) / 255.0).clamp(0, 1)
    arr = (x[0].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=int(rng.integers(*settings.test_jpeg, endpoint=True)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def resize(image: np.ndarray, size: int, method: Image.Resampling) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size)."""
    return np.asarray(Image.fromarray(image).resize((size, size), method))


# ----------------------------------------------------------------------------------------- the chain
def stage_configs(settings: DemoSettings, out: Path) -> dict[str, dict[str, Any]]:
    """Constructor arguments of the four stages, chained by checkpoint path under ``out``."""
    s = settings
    encoder = {"name": "vqgan", "ch": s.ch, "ch_mult": list(s.ch_mult), "num_res_blocks": 1,
               "resolution": s.image_size, "attn_resolutions": [], "z_channels": s.z_channels}
    codebook: dict[str, Any] = {"name": s.codebook, "n_embed": s.n_embed, "embed_dim": s.z_channels}
    if s.codebook == "ema":
        codebook.update(decay=0.95, dead_threshold=0.05)

    def loss(stage: str) -> dict[str, Any]:
        return {"name": "vqgan", "disc_start": int(s.steps[stage] * s.disc_start_fraction), "perceptual_weight": 0,
                "discriminator": {"name": "patchgan", "ndf": 16, "n_layers": 2}}

    # official_quirks off: the joint loop the demo was tuned with (one forward per batch, discriminators from
    # disc_start on); the official loop costs an extra forward per optimizer for no gain at this scale
    common: dict[str, Any] = {"learning_rate": s.learning_rate, "scale_lr": False, "val_panels": 4,
                              "official_quirks": False}
    if s.lr_scheduler:
        common["lr_scheduler"] = dict(s.lr_scheduler)
    ckpt = {name: str(out / "checkpoints" / name / "last.ckpt") for name in STAGES}
    return {
        "hq_codebook": {"target": "hq", "encoder": encoder, "decoder": dict(encoder), "codebook": codebook,
                        "loss": loss("hq_codebook"), **common},
        "lq_codebook": {"target": "lq", "encoder": encoder, "decoder": dict(encoder), "codebook": codebook,
                        "loss": loss("lq_codebook"), **common},
        "association": {"encoder": encoder, "decoder": dict(encoder), "codebook": codebook,
                        "loss": loss("association"), "association": {"name": "patch_clip", "temperature": 0.07},
                        "init_hq_from": ckpt["hq_codebook"], "init_lq_from": ckpt["lq_codebook"], **common},
        "restoration": {
            "arch": {"ch": s.ch, "ch_mult": list(s.ch_mult), "num_res_blocks": 1, "resolution": s.image_size,
                     "attn_resolutions": [], "z_channels": s.z_channels, "embed_dim": s.z_channels,
                     "n_embed": s.n_embed, "dropout": 0.0, "enable_mid": True, "head_size": 1, "fusion_heads": 4,
                     "n_layers": s.transformer_layers, "n_head": 4, "dim_mlp": 2 * s.transformer_dim,
                     "transformer_dim": s.transformer_dim},
            "codebook": codebook, "l2_weight": 10.0, "init_hq_codebook_from": ckpt["hq_codebook"],
            "init_association_from": ckpt["association"], "export_path": str(out / "restorer.safetensors"),
            **common},
    }


def _stage_class(name: str) -> Any:
    from daefr.stages import AssociationStage, CodebookStage, RestorationStage

    return {"hq_codebook": CodebookStage, "lq_codebook": CodebookStage, "association": AssociationStage,
            "restoration": RestorationStage}[name]


def train_stage(name: str, kwargs: dict[str, Any], settings: DemoSettings, train_dir: Path, val_dir: Path,
                out: Path, logger_kind: str, on_step: Callable[[], None]) -> None:
    """Train one stage for ``settings.steps[name]`` steps; writes ``out/checkpoints/<name>/last.ckpt``."""
    from lightning.pytorch import Callback, Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    from daefr.data import FaceDataModule

    class _Progress(Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            on_step()

    seed_everything(settings.seed, workers=True, verbose=False)
    degradation = None if name == "hq_codebook" else settings.train_degradation
    data = FaceDataModule(train=str(train_dir), val=str(val_dir), image_size=settings.image_size,
                          batch_size=settings.batch_size, num_workers=0, degradation=degradation,
                          seed=settings.seed, shuffle_buffer=64)
    model = _stage_class(name)(**kwargs)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=settings.steps[name], logger=_logger(logger_kind, out, name),
        callbacks=[ModelCheckpoint(dirpath=out / "checkpoints" / name, save_last=True, save_top_k=0), _Progress()],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, log_every_n_steps=10, default_root_dir=str(out / "logs"),
    )
    trainer.fit(model, datamodule=data)


def _logger(kind: str, out: Path, name: str) -> Any:
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(project="daefr-demo", name=name, save_dir=str(out / "logs"), offline=True)
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=str(out / "logs"), name=name)


# ------------------------------------------------------------------------------------------ held out
def make_testset(val: list[Path], settings: DemoSettings, out: Path) -> dict[str, Path]:
    """Write ``gt/``, ``lq/`` (small), ``lq_bicubic/`` (baseline) under ``out/testset``."""
    from daefr.utils.images import write_image

    dirs = {k: out / "testset" / k for k in ("gt", "lq", "bicubic")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(val):
        gt = load_square(path, settings.image_size)
        lq = degrade_test_image(gt, settings, seed=settings.seed * 100003 + index)
        name = f"{path.stem}.png"
        write_image(dirs["gt"] / name, gt)
        write_image(dirs["lq"] / name, lq)
        write_image(dirs["bicubic"] / name, resize(lq, settings.image_size, Image.Resampling.BICUBIC))
    return dirs


@torch.inference_mode()
def restore_testset(weights: Path, lq_dir: Path, out_dir: Path, image_size: int) -> list[Path]:
    """Restore every small LQ face (bilinear-upsampled to the model size, as in training) into ``out_dir``."""
    from daefr.interop.restorer_io import load_restorer
    from daefr.utils.images import read_image, write_image

    restorer = load_restorer(weights).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in find_images(lq_dir):
        lq = torch.tensor(read_image(path)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        lq = F.interpolate(lq, size=(image_size, image_size), mode="bilinear", align_corners=False)
        restored = restorer(lq.clamp(-1, 1))
        image = ((restored[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        target = out_dir / path.name
        write_image(target, image)
        written.append(target)
    return written


def run_demo(data_dir: Path, out: Path, settings: DemoSettings, logger_kind: str = "csv",
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole chain and the held-out evaluation; returns the summary written to ``out/summary.json``."""
    from tqdm import tqdm

    from daefr.metrics.report import evaluate_to_folder, write_comparison
    from daefr.metrics.suite import MetricsConfig

    started = time.perf_counter()
    _quiet_lightning()
    train, val = split_data(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / "data"
    train_dir = _link_files(train, staging / "train", settings.image_size)
    val_dir = _link_files(val, staging / "val", settings.image_size)
    configs = stage_configs(settings, out)
    (out / "stage_configs.json").write_text(json.dumps(configs, indent=2) + "\n")
    total = sum(settings.steps.values())
    bar = tqdm(total=total, desc="daefr demo", unit="step", dynamic_ncols=True)
    timings: dict[str, float] = {}
    for name in STAGES:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        train_stage(name, configs[name], settings, train_dir, val_dir, out, logger_kind, lambda: bar.update(1))
        timings[name] = round(time.perf_counter() - t0, 1)
    bar.set_postfix_str("evaluation")
    bar.close()
    weights = out / "restorer.safetensors"
    test = make_testset(val, settings, out)
    restored_dir = out / "restored"
    restore_testset(weights, test["lq"], restored_dir, settings.image_size)
    config = MetricsConfig(metrics=("psnr", "ssim"))
    ours, _ = evaluate_to_folder(restored_dir, out / "report", gt_dir=test["gt"], lq_dir=test["bicubic"],
                                 config=config, title="daefr demo: tiny DAEFR on held-out faces")
    base, _ = evaluate_to_folder(test["bicubic"], out / "report_bicubic", gt_dir=test["gt"], lq_dir=test["lq"],
                                 config=config, title="daefr demo: bicubic upsampling baseline")
    write_comparison(out / "report_bicubic", out / "report", out / "comparison", title="bicubic (A) vs DAEFR (B)")
    scores = {"daefr": _scores(ours.summary), "bicubic": _scores(base.summary)}
    summary: dict[str, Any] = {
        "data": str(data_dir), "train_images": len(train), "heldout_images": len(val),
        "settings": asdict(settings), "seconds": round(time.perf_counter() - started, 1), "stage_seconds": timings,
        **scores,
        "outputs": {"restorer": str(weights), "report": str(out / "report" / "report.html"),
                    "comparison": str(out / "comparison" / "compare.html"), "restored": str(restored_dir)},
    }
    summary["beats_bicubic"] = all(scores["daefr"][k] > scores["bicubic"][k] for k in ("psnr", "ssim"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _quiet_lightning() -> None:
    """Keep the demo's output to one progress bar: Lightning's start-up notes go to the log level only."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: set them after it)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # the restoration stage keeps its frozen HQ codebook, decoder and target branch in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def _scores(values: dict[str, Any]) -> dict[str, float]:
    """PSNR and SSIM of an evaluation summary as plain floats (NaN when a metric is missing)."""
    return {k: float(values[k]) if values.get(k) is not None else float("nan") for k in ("psnr", "ssim")}


def _link_files(files: list[Path], folder: Path, size: int) -> Path:
    """Copy the chosen images, centre-cropped and resized to ``size``, into ``folder`` (PNG)."""
    from daefr.utils.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        write_image(folder / f"{path.stem}.png", load_square(path, size))
    return folder
