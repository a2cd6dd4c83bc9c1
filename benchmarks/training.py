"""Seconds per optimizer step, peak memory and images/s of the three training stages, full size and tiny.

    .venv/bin/python benchmarks/training.py --arch tiny                       # seconds
    .venv/bin/python benchmarks/training.py --arch full --batches 1 2         # 512 px, minutes on 2 cores
    .venv/bin/python benchmarks/training.py --arch full --stages codebook --batches 1 2 \\
        --options base checkpointing channels_last fused_adam foreach_adam grads_kept
    .venv/bin/python benchmarks/training.py ... --write                      # also "## Training" in RESULTS.md
    .venv/bin/python benchmarks/training.py --from-log LOG.jsonl --write     # tables from a saved run

Stages (random weights, GAN on from step 0 so the adaptive weight and discriminator update run):
``codebook`` (CodebookStage, L1 + LPIPS with a random full-width VGG16 in the torchvision file layout +
hinge PatchGAN + VQ), ``association`` (both branches, their losses and discriminators, patch CLIP loss),
``restoration`` (RestorationStage, frozen HQ encoder/codebook, no decoding). ``full`` is the released
architecture (512x512 -> 16x16x256, PatchGAN ndf 64); ``tiny`` the layouts of ``configs/tiny`` (32 px).

Each configuration runs through Lightning's Trainer (the real stage code: manual optimisation, precision
plugin) in a fresh subprocess, so its peak RSS (VmHWM) is its own; on CUDA the peak is
``torch.cuda.max_memory_allocated``. ``--warmup`` steps are not timed; the figure is the median of the
``--steps`` timed optimizer steps. Options (``--options``, each a separate run against ``base``):
``checkpointing`` (activation checkpointing of every VQGAN encoder/decoder), ``channels_last`` (model and
batches), ``fused_adam`` / ``foreach_adam`` (Adam implementations), ``grads_kept`` (``zero_grad
(set_to_none=False)``, the opposite of the stages' default ``set_to_none=True``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall on a loaded CPU
os.environ.setdefault("WANDB_MODE", "disabled")

from machine import cpu_model  # noqa: E402  (benchmarks/, the script's own folder)

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training"
STAGES = ("codebook", "association", "restoration")
OPTIONS = ("base", "checkpointing", "channels_last", "fused_adam", "foreach_adam", "grads_kept")
TINY_LAYOUT: dict[str, Any] = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32,
                               "attn_resolutions": [], "z_channels": 32, "dropout": 0.0, "enable_mid": True,
                               "head_size": 1}
TINY_ARCH: dict[str, Any] = {**TINY_LAYOUT, "embed_dim": 32, "n_embed": 64, "fusion_heads": 4, "n_layers": 2,
                             "n_head": 4, "dim_mlp": 128, "transformer_dim": 64}


# ----- building one stage ----------------------------------------------------------------------------
def arch_size(arch: str | dict[str, Any]) -> int:
    """Image side of an architecture name (``full`` 512, ``tiny`` 32) or an arch dict."""
    if isinstance(arch, dict):
        return int(arch["resolution"])
    return {"full": 512, "tiny": 32}[arch]


def lpips_files(arch: str, cache: Path) -> tuple[Path, Path]:
    """Random LPIPS weights in the published file layout (full-width VGG16 for ``full``), written once."""
    from daefr.losses.lpips import LIN_FILE, VGG16_WIDTHS, VGG_FILE
    from daefr.testing.weights import TINY_VGG_WIDTHS, write_random_lpips_weights

    folder = cache / f"lpips-{arch}"
    if not (folder / VGG_FILE).exists() or not (folder / LIN_FILE).exists():
        write_random_lpips_weights(folder, VGG16_WIDTHS if arch == "full" else TINY_VGG_WIDTHS)
    return folder / VGG_FILE, folder / LIN_FILE


def build_stage(stage: str, arch: str, cache: Path) -> Any:
    """A training stage with random weights at architecture ``full`` or ``tiny``."""
    from daefr.models.presets import DISCRIMINATOR_PRESETS, VQGAN_PRESETS

    if stage == "restoration":
        from daefr.stages import RestorationStage

        return RestorationStage(arch="full" if arch == "full" else TINY_ARCH, learning_rate=1e-4, scale_lr=False)
    if arch == "full":
        preset = VQGAN_PRESETS["official"]
        layout = {k: v for k, v in preset.items() if k not in ("embed_dim", "n_embed")}
        codebook = {"name": "vq", "n_embed": preset["n_embed"], "embed_dim": preset["embed_dim"]}
        disc = {"name": "patchgan", **DISCRIMINATOR_PRESETS["official"]}
    else:
        layout, codebook = TINY_LAYOUT, {"name": "vq", "n_embed": 64, "embed_dim": 32}
        disc = {"name": "patchgan", "ndf": 8, "n_layers": 2}
    vgg, lin = lpips_files(arch, cache)
    loss = {"name": "vqgan", "disc_start": 0, "perceptual_weight": 1.0,
            "perceptual": {"name": "lpips", "vgg_path": str(vgg), "lin_path": str(lin)}, "discriminator": disc}
    enc = {"name": "vqgan", **layout}
    if stage == "codebook":
        from daefr.stages import CodebookStage

        return CodebookStage(encoder=enc, decoder=enc, codebook=codebook, loss=loss, learning_rate=1e-4,
                             scale_lr=False)
    if stage == "association":
        from daefr.stages import AssociationStage

        return AssociationStage(encoder=enc, decoder=enc, codebook=codebook, loss=loss, learning_rate=1e-4,
                                scale_lr=False)
    raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")


def apply_options(module: Any, options: list[str]) -> list[Callable[[], None]]:
    """Switch the named memory/speed options on ``module``; returns undo callbacks (global patches)."""
    import torch

    from daefr.nn.vqgan import set_activation_checkpointing

    undo: list[Callable[[], None]] = []
    for name in options:
        if name == "base":
            continue
        if name == "checkpointing":
            if not set_activation_checkpointing(module, True):
                raise ValueError("checkpointing: the stage has no VQGAN encoder/decoder")
        elif name == "channels_last":
            module.to(memory_format=torch.channels_last)
        elif name in ("fused_adam", "foreach_adam"):
            flag = {"fused": True} if name == "fused_adam" else {"foreach": True}

            def make_adam(params: Any, lr: float, _flag: dict[str, bool] = flag) -> torch.optim.Adam:
                return torch.optim.Adam(params, lr=lr, betas=module.betas, **_flag)

            module.make_adam = make_adam  # instance attribute: the stage's configure_optimizers calls it
        elif name == "grads_kept":
            original = torch.optim.Optimizer.zero_grad

            def keep(self: torch.optim.Optimizer, set_to_none: bool = True, _orig: Any = original) -> None:
                _orig(self, set_to_none=False)

            torch.optim.Optimizer.zero_grad = keep  # type: ignore[method-assign]
            def restore(_orig: Any = original) -> None:
                torch.optim.Optimizer.zero_grad = _orig  # type: ignore[method-assign]

            undo.append(restore)
        else:
            raise ValueError(f"unknown option {name!r}; use {', '.join(OPTIONS)}")
    return undo


# ----- measuring ---------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train ``cfg['warmup'] + cfg['steps']`` optimizer steps of one stage; returns the figures.

    ``cfg``: stage, arch, batch, steps, warmup, precision, device (``cpu``/``cuda``), options, cache. Raises
    ``torch.cuda.OutOfMemoryError`` when the batch does not fit (callers doing a batch search catch it).
    """
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything

    from daefr.testing.stages import FixedBatchDataModule

    device = str(cfg.get("device", "cpu"))
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times: list[float] = []
    cpu_times: list[float] = []

    class StepTimer(Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            sync()
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *args: Any) -> None:
            sync()
            times.append(time.perf_counter() - self.start)
            cpu_times.append(time.process_time() - self.cpu)  # all threads of this process

    class Batches(FixedBatchDataModule):
        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            if "channels_last" in cfg.get("options", []):
                return {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) else v
                        for k, v in batch.items()}
            return batch

    seed_everything(0, verbose=False)
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    stage = build_stage(cfg["stage"], cfg["arch"], Path(cfg["cache"]))
    undo = apply_options(stage, list(cfg.get("options", [])))
    total = int(cfg["warmup"]) + int(cfg["steps"])
    trainer = Trainer(accelerator="gpu" if cuda else "cpu", devices=1, precision=cfg.get("precision", "32-true"),
                      max_steps=total, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                      callbacks=[StepTimer()])
    data = Batches(image_size=arch_size(cfg["arch"]), batch_size=int(cfg["batch"]), steps=total)
    try:
        trainer.fit(stage, datamodule=data)
    finally:
        for fn in undo:
            fn()
    timed = times[int(cfg["warmup"]):]
    if len(timed) < int(cfg["steps"]):
        raise RuntimeError(f"only {len(times)} of {total} steps ran")
    median = statistics.median(timed)
    out = {**{k: v for k, v in cfg.items() if k != "cache"}, "step_s": median, "steps_s": timed,
           "cpu_s": statistics.median(cpu_times[int(cfg["warmup"]):]),
           "images_per_s": int(cfg["batch"]) / median, "nonfinite_steps": int(stage.nonfinite_total)}
    if cuda:
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["peak_kind"] = "max_memory_allocated"
    else:
        out["peak_mb"] = peak_rss_mb()
        out["peak_kind"] = "VmHWM"
    del trainer, stage, data
    gc.collect()
    return out


def run_in_subprocess(cfg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (own peak RSS); an ``error`` entry when it failed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.get("threads", 2))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**cfg, "error": f"exit {proc.returncode}: {tail}"}
    return dict(json.loads(lines[-1]))


# ----- reporting -------------------------------------------------------------------------------------
def load_text() -> str:
    """Load average (1, 5, 15 min) as text."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: one per configuration, with ratios against ``base`` of the same run/stage/arch/batch.

    ``run`` (set per log file by ``--from-log``) keeps the ratios within one run: the load of the shared CPU
    changes between runs.
    """
    base = {(r.get("run", 0), r["arch"], r["stage"], r["batch"], r.get("precision")): r for r in rows
            if r.get("options") == ["base"] and "error" not in r}
    peaks = {(r.get("run", 0), r["arch"], r["stage"], tuple(r["options"]), r.get("precision"), r["batch"]):
             r["peak_mb"] for r in rows if "error" not in r}
    lines = ["| run | arch | stage | batch | options | precision | s/step (median) | CPU s/step | images/s | peak MB | "
             "MB per extra image | time vs base | CPU time vs base | peak vs base |",
             "| ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        opts = "+".join(r.get("options", ["base"]))
        head = f"| {r.get('run', 0)} | {r['arch']} | {r['stage']} | {r['batch']} | {opts} | {r.get('precision')} "
        if "error" in r:
            lines.append(head + f"| failed: {r['error'][:80]} | | | | | | | |")
            continue
        run = r.get("run", 0)
        key = (run, r["arch"], r["stage"], tuple(r["options"]), r.get("precision"))
        one, two = peaks.get((*key, 1)), peaks.get((*key, 2))
        per = f"{two - one:.0f}" if r["batch"] == 2 and one is not None and two is not None else ""
        ref = base.get((run, r["arch"], r["stage"], r["batch"], r.get("precision")))
        t_ratio = f"{r['step_s'] / ref['step_s']:.2f}x" if ref and ref is not r else ""
        p_ratio = f"{r['peak_mb'] / ref['peak_mb']:.2f}x" if ref and ref is not r else ""
        cpu = f"{r['cpu_s']:.3f}" if "cpu_s" in r else "-"
        c_ratio = f"{r['cpu_s'] / ref['cpu_s']:.2f}x" if ref and ref is not r and "cpu_s" in r and "cpu_s" in ref else ""
        lines.append(head + f"| {r['step_s']:.3f} | {cpu} | {r['images_per_s']:.2f} | {r['peak_mb']:.0f} | {per} "
                     f"| {t_ratio} | {c_ratio} | {p_ratio} |")
    return lines


def replace_section(path: Path, section: str, text: str) -> None:
    """Replace (or append) the ``section`` heading's part of a markdown file, leaving the rest alone."""
    from daefr.utils.io import atomic_write_text

    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    atomic_write_text(path, new)


def markdown(rows: list[dict[str, Any]], command: str, meta: dict[str, str]) -> str:
    """The Training section: command, machine, load, the table."""
    return "\n".join([
        SECTION, "", f"Command: `{command}`", "",
        f"Machine: {meta['machine']}. Load average (1, 5, 15 min) at the start {meta['load_start']}, at the end "
        f"{meta['load_end']}: the CPU is shared with other work, so absolute times move with the load; the "
        "ratios against `base` (same stage, batch and run) are the figures to compare."
        + (f" Load average per run (start -> end): {meta['runs']}." if meta.get("runs") else ""), "",
        "Random weights; GAN and LPIPS on from the first step. Peak MB is the process's peak RSS (VmHWM, a fresh "
        "process per row: weights, Adam state, activations, the Python/torch runtime) on CPU and "
        "`torch.cuda.max_memory_allocated` on CUDA. \"MB per extra image\" is peak(batch 2) - peak(batch 1).", "",
        *table(rows), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--arch", nargs="+", default=["tiny"], choices=["full", "tiny"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--options", nargs="+", default=["base"], help=f"runs to make: {', '.join(OPTIONS)}; "
                        "join with + to combine (checkpointing+channels_last)")
    parser.add_argument("--precision", nargs="+", default=["32-true"], help="32-true, bf16-mixed, 16-mixed")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "daefr-bench-training")
    parser.add_argument("--from-log", type=Path, nargs="+", help="make the tables from JSON-lines logs of earlier "
                        "runs (several logs: their rows in order, the first start load, the last end load)")
    parser.add_argument("--write", action="store_true", help="replace the Training section of RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        import torch

        cfg = json.loads(args.worker)
        torch.set_num_threads(int(cfg.get("threads", 2)))
        print(json.dumps(measure(cfg)), flush=True)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{cpu_model()}, {os.cpu_count()} visible cores, {args.threads} torch threads, "
                       f"device {args.device}", "load_start": load_text()}
    if args.from_log:
        entries = [{**json.loads(line), "run": i + 1} for i, log in enumerate(args.from_log)
                   for line in log.read_text().splitlines() if line.strip()]
        metas = [{**e["meta"], "run": e["run"]} for e in entries if e.get("meta")]
        rows = [e for e in entries if not e.get("meta")]
        if metas:
            meta.update(machine=metas[0]["machine"], load_start=metas[0]["load_start"],
                        load_end=metas[-1].get("load_end", "not recorded"))
        command = "`; `".join(m["command"] for m in metas if m.get("command")) or "benchmarks/training.py"
        meta["runs"] = "; ".join(f"run {m['run']}: load {m['load_start']} -> {m.get('load_end', '?')}" for m in metas)
    else:
        log = args.cache / f"training-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        command = ".venv/bin/python benchmarks/training.py " + " ".join(a for a in sys.argv[1:] if a != "--write")
        rows = []
        with log.open("a") as fh:
            for arch in args.arch:
                for stage in args.stages:
                    for precision in args.precision:
                        for opts in args.options:
                            for batch in args.batches:
                                cfg = {"stage": stage, "arch": arch, "batch": batch, "steps": args.steps,
                                       "warmup": args.warmup, "precision": precision, "device": args.device,
                                       "options": opts.split("+"), "threads": args.threads, "cache": str(args.cache)}
                                row = run_in_subprocess(cfg)
                                rows.append(row)
                                fh.write(json.dumps(row) + "\n")
                                fh.flush()
                                shown = row.get("error") or (f"{row['step_s']:.3f} s/step, {row['peak_mb']:.0f} MB "
                                                             f"peak, steps {[round(t, 3) for t in row['steps_s']]}")
                                print(f"{arch} {stage} b{batch} {opts} {precision}: {shown}", flush=True)
            meta.update(load_end=load_text(), command=command)
            fh.write(json.dumps({"meta": meta}) + "\n")
        print(f"log: {log}")
    meta.setdefault("load_end", load_text())
    text = markdown(rows, command, meta)
    print(text)
    if args.write:
        replace_section(ROOT / "benchmarks" / "RESULTS.md", SECTION, text)


if __name__ == "__main__":
    main()
