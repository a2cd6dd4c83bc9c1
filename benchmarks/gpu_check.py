"""GPU acceptance run (``make gpu-check``): proves the CUDA paths and records their figures in one go.

    .venv/bin/python benchmarks/gpu_check.py                          # every part, 7-minute budget
    .venv/bin/python benchmarks/gpu_check.py --only train,restore --budget-s 240
    .venv/bin/python benchmarks/gpu_check.py --no-results             # figures under --out only

Parts (``--only``, comma-separated, run in this order):

* ``tests``   -- ``pytest -m gpu`` (the GPU-marked tests);
* ``train``   -- one bf16-mixed optimizer step of each full-size stage (512 px, released architecture,
  random weights, LPIPS and the GAN on) at batch 1, 2, 4, ... until CUDA runs out of memory: step time
  and ``torch.cuda.max_memory_allocated`` of each batch that fits;
* ``restore`` -- restorer throughput (faces/s) at batch 1 and 16: parity and fast paths, fp32 and bf16,
  with the max deviation and the share of identical codes against the fp32 parity path;
* ``degrade`` -- batched degradation on the GPU against the per-image CPU reference
  (``tests/reference_degradation.py``) for each blur backend (FFT, kornia ``filter2d``) and JPEG backend
  (ours, kornia's) at the presets' kernel sizes (39/41), and what ``auto`` picks;
* ``ddp``     -- the four tiny stage configs chained through ``daefr fit`` with DDP over NCCL (one
  process), then two processes sharing the GPU (NCCL refuses two ranks on one device on most setups;
  the check records the outcome either way).

Every finished measurement is appended at once to ``<out>/results.jsonl`` and ``<out>/gpu_check.md`` is
rewritten, so a run cut short keeps its figures. At the end the run is appended to the "## GPU" section of
``benchmarks/RESULTS.md`` (``--results``; ``--no-results`` to skip). ``--budget-s`` bounds the whole run:
each part gets a share and parts or batch sizes that no longer fit are skipped and marked so.

Without a CUDA device the script prints one line saying so and exits with status 2, running nothing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("tests", "train", "restore", "degrade", "ddp")
SHARES = {"tests": 0.15, "train": 0.35, "restore": 0.15, "degrade": 0.15, "ddp": 0.2}
SECTION = "## GPU"
NO_CUDA = ("gpu-check: no CUDA device is present (torch.cuda.is_available() is False); nothing was run. "
           "Run `make gpu-check` on a machine with an NVIDIA GPU and a CUDA build of torch.")


class OutOfBudget(Exception):
    """The time budget (of the run or of a part) is spent."""


class Recorder:
    """Collects rows per part; every ``add`` appends to ``results.jsonl`` and rewrites ``gpu_check.md``."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.rows: dict[str, list[dict[str, Any]]] = {p: [] for p in PARTS}
        self.notes: dict[str, list[str]] = {p: [] for p in PARTS}
        self._append({"header": header})
        self.flush()

    def _append(self, entry: dict[str, Any]) -> None:
        with (self.out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def add(self, part: str, row: dict[str, Any]) -> None:
        self.rows[part].append(row)
        self._append({"part": part, **row})
        self.flush()

    def note(self, part: str, text: str) -> None:
        self.notes[part].append(text)
        self._append({"part": part, "note": text})
        self.flush()

    def flush(self) -> None:
        from daefr.utils.io import atomic_write_text

        atomic_write_text(self.out / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        h = self.header
        lines = [f"### {h['gpu']} ({h['date']})", "",
                 f"Command: `{h['command']}`; torch {h['torch']}, CUDA {h['cuda']}, {h['cpu']}; budget {h['budget_s']} s.",
                 ""]
        for part in PARTS:
            if not self.rows[part] and not self.notes[part]:
                continue
            lines += [f"**{part}**", ""]
            lines += RENDER[part](self.rows[part])
            lines += [f"- {n}" for n in self.notes[part]]
            lines.append("")
        return "\n".join(lines) + "\n"


# ----- tables ----------------------------------------------------------------------------------------
def _render_tests(rows: list[dict[str, Any]]) -> list[str]:
    return [f"`pytest -m gpu`: {r['summary']} (exit {r['returncode']}, {r['seconds']:.0f} s)" for r in rows] + [""]


def _render_train(rows: list[dict[str, Any]]) -> list[str]:
    kind = next((r["peak_kind"] for r in rows if r.get("peak_kind")), "max_memory_allocated")
    lines = [f"| stage | precision | batch | result | s/step | images/s | peak MB ({kind}) |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        head = f"| {r['stage']} | {r.get('precision', '')} | {r['batch']} "
        if r.get("error"):
            lines.append(head + f"| {r['error']} | | | |")
        else:
            lines.append(head + f"| fits | {r['step_s']:.3f} | {r['images_per_s']:.1f} | {r['peak_mb']:.0f} |")
    return lines + [""]


def _render_restore(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| batch | path | precision | faces/s | max abs deviation vs fp32 parity | identical codes |",
             "| ---: | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['batch']} | {r['path']} | {r['precision']} | {r['faces_per_s']:.1f} | {r['max_dev']:.2e} "
              f"| {100 * r['same_codes']:.2f}% |" for r in rows]
    return lines + [""]


def _render_degrade(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| preset | blur | JPEG | batch | ours on the device (img/s) | per-image CPU reference (img/s) | speed-up |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['preset']} | {r['blur']} | {r['jpeg']} | {r['batch']} | {r['ours']:.1f} | {r['ref']:.1f} "
              f"| {r['ratio']:.1f}x |" for r in rows]
    return lines + [""]


def _render_ddp(rows: list[dict[str, Any]]) -> list[str]:
    return [f"- {r['what']}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']:.0f} s){': ' + r['detail'] if r.get('detail') else ''}"
            for r in rows] + [""]


RENDER: dict[str, Callable[[list[dict[str, Any]]], list[str]]] = {
    "tests": _render_tests, "train": _render_train, "restore": _render_restore, "degrade": _render_degrade,
    "ddp": _render_ddp}


# ----- budget ----------------------------------------------------------------------------------------
class Budget:
    """Wall-clock budget of the run; ``part(name)`` gives a part its share of what is left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.total = seconds
        self.part_end = self.end

    def left(self) -> float:
        return min(self.end, self.part_end) - time.monotonic()

    def start_part(self, name: str, remaining_parts: list[str]) -> None:
        run_left = self.end - time.monotonic()
        share = SHARES[name] / sum(SHARES[p] for p in remaining_parts)
        self.part_end = time.monotonic() + run_left * share

    def check(self, need: float = 0.0) -> None:
        if self.left() < need:
            raise OutOfBudget(f"time budget spent ({max(self.left(), 0):.0f} s left, {need:.0f} s needed)")


# ----- parts -----------------------------------------------------------------------------------------
def part_tests(rec: Recorder, budget: Budget, args: argparse.Namespace) -> None:
    """``pytest -m gpu`` on ``args.test_paths``; records the summary line."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *args.test_paths]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=max(budget.left(), 1),
                              env={**os.environ, "WANDB_MODE": "offline"})
        out = (proc.stdout + proc.stderr).strip().splitlines()
        summary = next((ln for ln in reversed(out) if " passed" in ln or " failed" in ln or " skipped" in ln
                        or "no tests ran" in ln or "deselected" in ln), out[-1] if out else "no output")
        code = proc.returncode
        (rec.out / "pytest_gpu.log").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        summary, code = "timed out (time budget)", -1
    rec.add("tests", {"summary": summary.strip("= "), "returncode": code, "seconds": time.perf_counter() - start})


def largest_batch(try_batch: Callable[[int], dict[str, Any]], cap: int, budget: Budget,
                  on_row: Callable[[dict[str, Any]], None]) -> int:
    """Try batch 1, 2, 4, ... up to ``cap`` until one runs out of memory; returns the largest that fit (0: none).

    ``try_batch(b)`` returns the figures of batch ``b`` or raises ``torch.OutOfMemoryError``. Each attempt
    (fitting or not) goes to ``on_row``. Stops early when the next attempt would likely not finish in time
    (assumed to take twice the last one).
    """
    import torch

    best, batch, last_s = 0, 1, 0.0
    while batch <= cap:
        budget.check(2 * last_s)
        start = time.perf_counter()
        try:
            row = try_batch(batch)
        except torch.OutOfMemoryError as exc:
            on_row({"batch": batch, "error": f"out of memory ({str(exc).splitlines()[0][:60]})"})
            break
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        on_row(row)
        best, last_s = batch, time.perf_counter() - start
        batch *= 2
    return best


def part_train(rec: Recorder, budget: Budget, args: argparse.Namespace) -> None:
    """Largest bf16-mixed batch per stage (doubling), with step time and peak memory."""
    import torch
    from training import measure

    for stage in args.stages:
        def attempt(batch: int, _stage: str = stage) -> dict[str, Any]:
            if args.fake_max_batch and batch > args.fake_max_batch:  # dry runs: exercise the OOM branch
                raise torch.OutOfMemoryError(f"simulated: batch {batch} > --fake-max-batch {args.fake_max_batch}")
            cfg = {"stage": _stage, "arch": args.arch, "batch": batch, "steps": 1, "warmup": 1,
                   "precision": args.precision, "device": args.device, "options": ["base"], "cache": str(args.cache)}
            return measure(cfg)

        def record(row: dict[str, Any], _stage: str = stage) -> None:
            rec.add("train", {"stage": _stage, "precision": args.precision, **row})

        try:
            best = largest_batch(attempt, args.max_batch, budget, record)
        except OutOfBudget as exc:
            rec.note("train", f"{stage}: stopped, {exc}")
            continue
        rec.note("train", f"{stage}: largest batch that fits {best}" +
                 (f" (cap {args.max_batch})" if best == args.max_batch else ""))
    for stage in args.stages if args.fp16_step else []:  # 16-mixed (GradScaler) for GPUs without bf16
        budget.check()
        cfg = {"stage": stage, "arch": args.arch, "batch": 1, "steps": 1, "warmup": 1, "precision": "16-mixed",
               "device": args.device, "options": ["base"], "cache": str(args.cache)}
        try:
            rec.add("train", {"stage": stage, **measure(cfg)})
        except Exception as exc:
            rec.add("train", {"stage": stage, "batch": 1, "precision": "16-mixed",
                              "error": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"})


def _restorer(arch: str, device: str) -> Any:
    from daefr.interop.restorer_io import restorer_from_official
    from daefr.testing.daefr_tiny import random_official_state_dict

    return restorer_from_official(random_official_state_dict(arch, seed=0)).to(device).eval()


def part_restore(rec: Recorder, budget: Budget, args: argparse.Namespace) -> None:
    """Faces/s of parity and fast paths in fp32 and bf16, deviation and identical codes vs fp32 parity."""
    import torch

    from daefr.models.inference_options import InferenceOptions, optimize_for_inference

    base = _restorer(args.restore_arch, args.device)
    size = int(base.input_size)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for batch in args.restore_batches:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(args.device) * 2 - 1
        ref: tuple[torch.Tensor, torch.Tensor] | None = None
        for path, precision in (("parity", "fp32"), ("parity", "bf16"), ("fast", "fp32"), ("fast", "bf16")):
            budget.check()
            opts = InferenceOptions.parity() if path == "parity" else InferenceOptions()
            model = optimize_for_inference(copy.deepcopy(base), opts.replace(precision=precision))
            out = model.forward_with_codes(x)  # warm-up
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                out = model.forward_with_codes(x)
                sync()
                times.append(time.perf_counter() - start)
            restored, codes = out[0].float().cpu(), out[1].cpu()
            if ref is None:
                ref = (restored, codes)
            rec.add("restore", {"batch": batch, "path": path, "precision": precision,
                                "faces_per_s": batch / statistics.median(times),
                                "max_dev": float((restored - ref[0]).abs().max()),
                                "same_codes": float((codes == ref[1]).float().mean())})
            del model
            gc.collect()


def part_degrade(rec: Recorder, budget: Budget, args: argparse.Namespace) -> None:
    """Batched degradation on the device vs the per-image CPU reference, per blur/JPEG backend."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from degradation import load_faces, time_ours, time_reference

    from daefr.data.degradation import preset
    from daefr.data.degradation.backends import resolve_blur_backend

    faces = load_faces(args.degrade_batch, args.degrade_size)
    hq = torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous().to(args.device)
    for name in args.presets:
        budget.check()
        probe = preset(name)
        ranges = dict(sigma=probe.sigma_range, scale=probe.scale_range, noise=probe.noise_range,
                      jpeg=probe.jpeg_range, size=max(probe.kernel_sizes))
        time_reference(faces, 0, ranges)  # warm-up
        ref = statistics.median(time_reference(faces, r + 1, ranges)[0] for r in range(args.repeats))
        auto = sorted({resolve_blur_backend("auto", k) for k in probe.kernel_sizes})
        rec.note("degrade", f"{name}: kernel sizes {list(probe.kernel_sizes)}; `auto` blur picks {', '.join(auto)}")
        for blur in ("fft", "kornia"):
            for jpeg in ("libjpeg", "kornia"):
                budget.check()
                module = preset(name, blur_backend=blur, jpeg_backend=jpeg)
                time_ours(module, hq, 0)
                ours = statistics.median(time_ours(module, hq, r + 1)[0] for r in range(args.repeats))
                b = hq.shape[0]
                rec.add("degrade", {"preset": name, "blur": blur, "jpeg": jpeg, "batch": b, "ours": b / ours,
                                    "ref": b / ref, "ratio": ref / ours})


FIXED_DATA = json.dumps({"class_path": "daefr.testing.stages.FixedBatchDataModule",
                         "init_args": {"image_size": 32, "batch_size": 2}})


def _fit_cmd(stage: str, args: argparse.Namespace) -> list[str]:
    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    return [sys.executable, "-m", "daefr", "fit", "--config", str(ROOT / "configs" / "tiny" / f"{stage}.yaml"),
            "--trainer.accelerator", accel, "--trainer.devices", "1",
            "--trainer.strategy", "ddp_find_unused_parameters_true",  # GAN stages: generator/discriminator steps
            "--trainer.max_steps", str(args.ddp_steps), "--trainer.val_check_interval", str(args.ddp_steps),
            "--data", FIXED_DATA]


def part_ddp(rec: Recorder, budget: Budget, args: argparse.Namespace) -> None:
    """The tiny chain with DDP (world size 1) through ``daefr fit``, then 2 ranks sharing the device."""
    work = Path(tempfile.mkdtemp(prefix="gpu-check-ddp-", dir=rec.out))
    for stage in ("hq_codebook", "lq_codebook", "association", "restoration"):
        budget.check(5)
        start = time.perf_counter()
        try:
            proc = subprocess.run(_fit_cmd(stage, args), cwd=work, capture_output=True, text=True,
                                  timeout=max(budget.left(), 1), env={**os.environ, "WANDB_MODE": "disabled"})
            ok, detail = proc.returncode == 0, "" if proc.returncode == 0 else _last_error(proc.stderr)
            (rec.out / f"ddp_{stage}.log").write_text(proc.stdout + proc.stderr)
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out (time budget)"
        backend = "NCCL" if args.device.startswith("cuda") else "gloo"
        rec.add("ddp", {"what": f"tiny {stage}, DDP over {backend}, world size 1, {args.ddp_steps} steps",
                        "ok": ok, "seconds": time.perf_counter() - start, "detail": detail})
        if not ok:
            rec.note("ddp", "the chain stops at the first failed stage (later stages need its checkpoint)")
            break
    budget.check(5)
    start = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ddp-shared-worker", args.device, "--ddp-steps",
           str(args.ddp_steps)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(budget.left(), 1))
        ok, detail = proc.returncode == 0, (proc.stdout.strip().splitlines() or [""])[-1] if proc.returncode == 0 \
            else _last_error(proc.stderr)
        (rec.out / "ddp_shared.log").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        ok, detail = False, "timed out (time budget)"
    rec.add("ddp", {"what": "2 processes sharing one device (torch DDP, tiny VQGAN)", "ok": ok,
                    "seconds": time.perf_counter() - start, "detail": detail})


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][:200]


def _shared_rank(rank: int, world: int, device: str, steps: int, port: int) -> None:
    """One rank of the shared-device check: DDP-wrapped tiny VQGAN, ``steps`` Adam steps, equal weights after."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from daefr.models.vqgan import VQGAN

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            device_id=torch.device(device) if cuda else None)
    try:
        torch.manual_seed(0)
        enc = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32,
               "attn_resolutions": [], "z_channels": 32}
        model = VQGAN(enc, enc, {"name": "vq", "n_embed": 64, "embed_dim": 32}).to(device)
        # attention blocks carry a norm2 that only cross-attention uses: unused here
        ddp = DistributedDataParallel(model, device_ids=[torch.device(device).index or 0] if cuda else None,
                                      find_unused_parameters=True)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(rank)).to(device) * 2 - 1
        for _ in range(steps):
            recon, cb_loss, _ = ddp(x)
            loss = (recon - x).abs().mean() + cb_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], g) for g in gathered):
            raise RuntimeError("ranks ended with different weights")
        if rank == 0:
            print(f"world size {world} on {device}: {steps} steps, ranks agree, loss {float(loss.detach()):.4f}", flush=True)
    finally:
        dist.destroy_process_group()


def ddp_shared_worker(device: str, steps: int) -> None:
    """Spawn two ranks on the same device (``--ddp-shared-worker``)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shared_rank, args=(2, device, steps, port), nprocs=2, join=True)


# ----- driver ----------------------------------------------------------------------------------------
def append_run(results: Path, run_text: str) -> None:
    """Append this run's text at the end of the GPU section (created when missing)."""
    from daefr.utils.io import atomic_write_text

    old = results.read_text() if results.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.strip() == SECTION), None)
    intro = (f"{SECTION}\n\nRuns of `make gpu-check` (benchmarks/gpu_check.py), newest last; each names its GPU. "
             "Steps and what each part measures: docs/cluster.md, \"GPU acceptance check\".\n\n")
    if start is None:
        new = old.rstrip("\n") + "\n\n" + intro + run_text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        body = "".join(lines[:end]).rstrip("\n") + "\n\n" + run_text
        new = body + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    atomic_write_text(results, new)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of the whole run")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/gpu-check/<time>)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch the doubling search tries")
    parser.add_argument("--stages", default="codebook,association,restoration")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "daefr-gpu-check")
    # hidden: dry runs on the CPU with tiny layouts (tests), and the shared-device DDP worker
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--fake-max-batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--test-paths", nargs="+", default=["tests"], help=argparse.SUPPRESS)
    parser.add_argument("--ddp-shared-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)} in --only; choose from {','.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    dry = not args.device.startswith("cuda")
    # full size on the GPU; tiny layouts in CPU dry runs
    args.arch, args.restore_arch = ("tiny", "tiny") if dry else ("full", "full")
    args.precision = "bf16-mixed"
    args.fp16_step = not dry  # Lightning runs 16-mixed on CUDA only
    args.restore_batches = [1, 2] if dry else [1, 16]
    args.degrade_batch, args.degrade_size = (2, 64) if dry else (16, 512)
    args.presets = ["daefr_small"] if dry else ["daefr_small", "daefr_large"]
    if dry:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.ddp_shared_worker:
        ddp_shared_worker(args.ddp_shared_worker, args.ddp_steps)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import cpu_model

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU dry run ({cpu_model()})"
    if args.device.startswith("cuda"):
        gpu += f", {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "runs" / "gpu-check" / stamp
    args.cache.mkdir(parents=True, exist_ok=True)
    header = {"gpu": gpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "cuda": torch.version.cuda, "cpu": f"{cpu_model()} ({os.cpu_count()} cores, {platform.machine()})",
              "budget_s": args.budget_s,
              "command": "benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    rec = Recorder(out, header)
    budget = Budget(args.budget_s)
    runners = {"tests": part_tests, "train": part_train, "restore": part_restore, "degrade": part_degrade,
               "ddp": part_ddp}
    failed = []
    for i, part in enumerate(args.parts):
        budget.start_part(part, args.parts[i:])
        print(f"gpu-check: {part} ({budget.left():.0f} s)", flush=True)
        try:
            runners[part](rec, budget, args)
        except OutOfBudget as exc:
            rec.note(part, f"skipped the rest: {exc}")
        except Exception as exc:  # a broken part must not cost the figures of the others
            failed.append(part)
            rec.note(part, f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    if not args.no_results:
        append_run(args.results, rec.markdown())
    print(rec.markdown())
    print(f"gpu-check: figures in {out}" + ("" if args.no_results else f" and {args.results}"))
    bad = failed + [p for p in ("tests", "ddp") if any(r.get("returncode", 0) not in (0, 5) or r.get("ok") is False
                                                        for r in rec.rows[p])]
    if bad:
        print(f"gpu-check: problems in {', '.join(sorted(set(bad)))}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
