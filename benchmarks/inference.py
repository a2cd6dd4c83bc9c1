"""Inference speed and memory of the full-size DAEFR restorer: parity path vs fast path vs ONNX Runtime.

    .venv/bin/python benchmarks/inference.py --quick           # bounded run (batch 1 and 4; see --help)
    .venv/bin/python benchmarks/inference.py                   # batch 1/4/16, threads 1/2
    .venv/bin/python benchmarks/inference.py --write           # also update "## Inference" in RESULTS.md
    .venv/bin/python benchmarks/inference.py --from-log FILE   # re-make the tables from a saved run log

Model: the released architecture (512x512 faces, ch 64, ch_mult 1-2-2-4-4-8, latent 16x16x256, 1024 codes,
9-layer transformer) with seeded random weights written in the official final-stage layout and loaded with
``restorer_from_official`` (cached in ``--cache``). Variants:

* ``parity``  -- ``DAEFRRestorer`` default (official numerics) under ``torch.no_grad``, as the official
  script runs it;
* ``fast``    -- ``optimize_for_inference(restorer)`` (InferenceOptions defaults: ``set_fast`` = fused
  attention, fused blocks, sub-pixel upsampling, in-place activations, argmax; channels-last, inference
  mode, fp32);
* ``fast-nchw`` -- the same without channels-last;
* ``onnx``    -- the fast graph exported by ``daefr.interop.export`` (dynamic batch), run by ONNX Runtime
  with the project's session settings (``daefr.interop.export.ONNX_SESSION_DEFAULTS``: no memory pattern,
  the freed model parse handed back to the OS);
* ``onnx-ort-defaults`` -- the same file with ONNX Runtime's own memory settings (memory pattern on,
  nothing handed back), to show what the project's settings change;
* ``bf16``    -- the fast path under bf16 autocast (this CPU's AMX/AVX512-BF16 kernels);
* ``compile`` -- the fast path wrapped in ``torch.compile`` (compile time reported separately).

Each configuration (variant, batch, threads) runs in a fresh subprocess so that peak RSS (VmHWM) is its
own; it does one warm-up forward, then ``--repeats`` timed forwards, and reports the median wall time
and the median process CPU time per face (CPU time is the steadier figure on a shared machine). The
first face of every batch is the same seeded face; its restored image and codes are saved so that the
parent compares every variant with the parity path (max |diff| on [-1, 1] and share of identical codes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model  # benchmarks/, the script's own folder

from daefr.models.architectures import get_architecture

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall on a loaded CPU

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Inference"
VARIANTS = ("parity", "fast", "fast-nchw", "onnx", "onnx-ort-defaults", "bf16", "compile")
SIZE = 512


# ----- worker (one configuration, fresh process) ------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _inputs(batch: int, seed: int, size: int) -> Any:
    import torch

    first = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if batch == 1:
        return first
    rest = torch.rand(batch - 1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1
    return torch.cat([first, rest])


def _load(cfg: dict[str, Any]) -> tuple[Any, float]:
    """(callable x -> (restored, indices), seconds spent preparing it, compile included)."""
    import torch

    from daefr.interop.restorer_io import load_restorer
    from daefr.models.inference_options import InferenceOptions, optimize_for_inference

    variant = cfg["variant"]
    start = time.perf_counter()
    if variant in ("onnx", "onnx-ort-defaults"):
        from daefr.interop.export import load_exported

        ort_defaults = {"enable_mem_pattern": True, "release_freed_heap": False}
        run = load_exported(cfg["onnx"], threads=cfg["threads"],
                            onnx_options=ort_defaults if variant == "onnx-ort-defaults" else None)
        return run, time.perf_counter() - start
    restorer = load_restorer(cfg["weights"])
    if variant == "parity":
        def parity(x: Any) -> Any:
            with torch.no_grad():
                out = restorer(x, return_details=True)
            return out["restored"], out["indices"]

        return parity, time.perf_counter() - start
    options = InferenceOptions(channels_last=variant != "fast-nchw", precision="bf16" if variant == "bf16" else "fp32",
                               compile=variant == "compile")
    model = optimize_for_inference(restorer, options)
    return model.forward_with_codes, time.perf_counter() - start


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration; returns its figures (also saves the first face's output when asked)."""
    import numpy as np
    import torch

    torch.set_num_threads(int(cfg["threads"]))
    torch.set_num_interop_threads(1)
    load_start = os.getloadavg()[0]
    run, prepare_s = _load(cfg)
    rss_loaded = _status_kb("VmRSS")
    x = _inputs(int(cfg["batch"]), int(cfg["seed"]), int(cfg.get("size", SIZE)))
    warm = time.perf_counter()
    run(x[:1] if cfg.get("warmup_batch1") else x)
    warmup_s = time.perf_counter() - warm
    walls, cpus = [], []
    out: Any = None
    for _ in range(int(cfg["repeats"])):
        t, c = time.perf_counter(), time.process_time()
        out = run(x)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    if cfg.get("save"):
        restored, indices = out
        np.savez(cfg["save"], restored=restored[0].float().numpy(), indices=indices[0].numpy())
    return {**{k: cfg[k] for k in ("variant", "batch", "threads", "repeats")}, "walls": walls, "cpus": cpus,
            "prepare_s": prepare_s, "warmup_s": warmup_s, "rss_loaded_mb": rss_loaded / 1024,
            "peak_rss_mb": _status_kb("VmHWM") / 1024, "load_before": load_start, "load_after": os.getloadavg()[0]}


# ----- parent -------------------------------------------------------------------------------------------
def machine() -> str:
    """CPU model, cores, torch and ONNX Runtime versions."""
    import onnxruntime
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}")


def ensure_weights(cache: Path, seed: int, arch: str = "release") -> Path:
    """Seeded random weights (full size by default) in the official layout, loaded by restorer_from_official
    and saved once."""
    path = cache / f"daefr_{arch}_random_seed{seed}.safetensors"
    if path.is_file():
        return path
    from daefr.interop.restorer_io import restorer_from_official, save_restorer
    from daefr.testing.daefr_tiny import random_official_state_dict

    print(f"making random official-layout weights -> {path}", flush=True)
    restorer = restorer_from_official(random_official_state_dict(arch, seed=seed))
    save_restorer(restorer, path)
    return path


def ensure_onnx(cache: Path, weights: Path) -> Path:
    """The fast graph of ``weights`` exported to ONNX with a dynamic batch (cached)."""
    path = cache / (weights.stem + "_fast_dynamic.onnx")
    if path.is_file():
        return path
    from daefr.interop.export import export_restorer
    from daefr.interop.restorer_io import load_restorer

    print(f"exporting the fast graph to ONNX -> {path}", flush=True)
    start = time.perf_counter()
    export_restorer(load_restorer(weights), path, "onnx", fast=True, batch=None, overwrite=True)
    print(f"  export took {time.perf_counter() - start:.0f} s", flush=True)
    return path


def run_config(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One configuration in a fresh interpreter; returns its figures or an ``error``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**cfg, "error": f"exit {proc.returncode}: {tail}"}
    return dict(json.loads(lines[-1]))


def compare(reference: Path, other: Path) -> tuple[float, float]:
    """(max |restored difference|, share of identical codes) between two saved first-face outputs."""
    import numpy as np

    a, b = np.load(reference), np.load(other)
    return float(np.abs(a["restored"] - b["restored"]).max()), float((a["indices"] == b["indices"]).mean())


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Configurations in run order: per batch and thread count, the variants side by side."""
    configs = []
    for batch in args.batches:
        for threads in args.threads:
            if threads != max(args.threads) and batch not in args.batches_for_fewer_threads:
                continue
            for variant in args.variants:
                repeats = args.repeats if batch == 1 else args.repeats_batched
                configs.append({"variant": variant, "batch": batch, "threads": threads, "repeats": repeats,
                                "seed": args.seed, "warmup_batch1": batch > 1})
    return configs


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def tables(results: list[dict[str, Any]], accuracy: dict[str, tuple[float, float]]) -> str:
    """Markdown: speed table (ratios vs parity at the same batch and threads) and accuracy table."""
    ok = [r for r in results if "error" not in r]
    base = {(r["batch"], r["threads"]): r for r in ok if r["variant"] == "parity"}
    lines = ["| variant | batch | threads | runs | s/face (wall, median) | faces/s | CPU s/face (median) | "
             "speed-up vs parity (wall / CPU) | peak RSS MB | load avg before/after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in ok:
        wall = _median(r["walls"]) / r["batch"]
        cpu = _median(r["cpus"]) / r["batch"]
        ref = base.get((r["batch"], r["threads"]))
        ratio = "-"
        if ref is not None:
            ratio = (f"{(_median(ref['walls']) / ref['batch']) / wall:.2f}x / "
                     f"{(_median(ref['cpus']) / ref['batch']) / cpu:.2f}x")
        lines.append(f"| {r['variant']} | {r['batch']} | {r['threads']} | {len(r['walls'])} | {wall:.2f} | "
                     f"{1 / wall:.3f} | {cpu:.2f} | {ratio} | {r['peak_rss_mb']:.0f} | "
                     f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['threads']} | 0 | failed: {r['error']} | | | | | |")
    if accuracy:
        lines += ["", "| variant vs parity (first face, batch 1) | max abs diff on [-1, 1] | identical codes |",
                  "| --- | ---: | ---: |"]
        for variant, (diff, agree) in accuracy.items():
            lines.append(f"| {variant} | {diff:.2e} | {100 * agree:.2f}% |")
    return "\n".join(lines)


def write_section(text: str) -> Path:
    """Replace (or append) the ``## Inference`` section of benchmarks/RESULTS.md."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text.rstrip("\n") + "\n" + (old[end:] if end >= 0 else "")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="bounded run: batches 1 4, threads 2 (threads 1 at batch 1 only), variants parity fast onnx, "
                        "3 timed runs at batch 1 and 1 at larger batches")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["parity", "fast", "onnx"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches-for-fewer-threads", nargs="+", type=int, default=[1], metavar="B",
                   help="batches also run with fewer than the most threads (default: 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs at batch 1 (after one warm-up)")
    p.add_argument("--repeats-batched", type=int, default=2, help="timed runs at batch > 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=("release", "parity", "full", "tiny"), default="release",
                   help="architecture name (parity, alias tiny: 64x64, only to try the script out; full = release)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "daefr-bench-inference",
                   help="folder for the random weights, the ONNX export and per-variant outputs")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    p.add_argument("--log", type=Path, default=None, help="JSON-lines log of results (default: in --cache)")
    p.add_argument("--from-log", type=Path, default=None, help="make the tables from a log instead of running")
    p.add_argument("--write", action="store_true", help="update the '## Inference' section of benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.threads, args.repeats, args.repeats_batched = [1, 4], [1, 2], 3, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.arch = get_architecture(args.arch).name  # old names -> the table's name
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    log = args.log or args.cache / "results.jsonl"
    command = "python benchmarks/inference.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                            if a != "--write")
    if args.from_log:
        entries = [json.loads(line) for line in args.from_log.read_text().splitlines() if line.strip()]
        header: dict[str, Any] = next((e for e in entries if e.get("kind") == "header"), {})
        results = [e for e in entries if e.get("kind") == "result"]
        accuracy = {e["variant"]: (e["max_abs"], e["agreement"]) for e in entries if e.get("kind") == "accuracy"}
        command = header.get("command", command)
    else:
        weights = ensure_weights(args.cache, args.seed, args.arch)
        onnx_path = ensure_onnx(args.cache, weights) if any(v.startswith("onnx") for v in args.variants) else None
        header = {"kind": "header", "command": command, "machine": machine(), "started": time.strftime(
            "%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()[0]}
        with log.open("w") as fh:
            fh.write(json.dumps(header) + "\n")
        results = []
        saved: dict[str, Path] = {}
        for cfg in plan(args):
            cfg.update(weights=str(weights), onnx=str(onnx_path) if onnx_path else None,
                       size=get_architecture(args.arch).input_size)
            if cfg["batch"] == 1 and cfg["threads"] == max(args.threads):
                cfg["save"] = str(args.cache / f"first_face_{args.arch}_{cfg['variant']}.npz")
            result = run_config(cfg, args.timeout)
            if "error" not in result and cfg.get("save"):
                saved[cfg["variant"]] = Path(cfg["save"])
            results.append(result)
            with log.open("a") as fh:
                fh.write(json.dumps({"kind": "result", **result}) + "\n")
            brief = result.get("error") or (f"{_median(result['walls']) / cfg['batch']:.2f} s/face wall, "
                                            f"{_median(result['cpus']) / cfg['batch']:.2f} CPU s/face, "
                                            f"peak {result['peak_rss_mb']:.0f} MB")
            print(f"{cfg['variant']:>9} batch {cfg['batch']:>2} threads {cfg['threads']}: {brief}", flush=True)
        accuracy = {}
        earlier = args.cache / f"first_face_{args.arch}_parity.npz"
        if "parity" not in saved and earlier.is_file():  # a parity output from an earlier run, same seed
            saved = {"parity": earlier, **saved}
        if "parity" in saved:
            for variant, path in saved.items():
                if variant != "parity":
                    accuracy[variant] = compare(saved["parity"], path)
                    with log.open("a") as fh:
                        fh.write(json.dumps({"kind": "accuracy", "variant": variant, "max_abs": accuracy[variant][0],
                                             "agreement": accuracy[variant][1]}) + "\n")
        header["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = tables(results, accuracy)
    print(body)
    if args.write:
        text = (f"{SECTION}\n\nCommand: `{header.get('command', command)}`  \n"
                f"Machine: {header.get('machine', machine())}  \n"
                f"Run: {header.get('started', '?')} to {header.get('finished', '?')}; load average at start "
                f"{header.get('load', float('nan')):.1f} (shared machine: wall times include waiting for the CPU; "
                f"CPU s/face is the process's own CPU time)\n\n{body}\n")
        print(f"updated {write_section(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
