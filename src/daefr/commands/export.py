"""``daefr export WEIGHTS -o OUT --format onnx|torchscript|exported-program``: export the restorer.

The exported graph maps ``lq (B, 3, S, S) float32 in [-1, 1]`` to ``restored (B, 3, S, S)`` and the top-1
codes ``indices (B, T) int64``. ``--batch N`` fixes the batch size; the default is a dynamic batch.
``--fast`` exports the fast-path graph (fused blocks, sub-pixel upsampling, argmax), else the parity
graph. ``--check`` runs the exported file (ONNX Runtime for ONNX) against the eager model on seeded
inputs and fails (exit 1) unless max |diff| <= 1e-3 and >= 99% of the codes agree.
Run the result with ``daefr restore --weights OUT.onnx`` (the backend follows the file).
"""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export the restorer to ONNX, TorchScript or a torch.export ExportedProgram (and check it)"

_FORMATS = ("onnx", "torchscript", "exported-program")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr export`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (__doc__ or "").split("\n\n", 1)[1]
    from daefr.commands._options import add_force, add_output, add_positional_alias, add_weights

    add_weights(parser, "daefr", "restorer weights: a daefr .safetensors file, the official DAEFR_model.ckpt, a "
                "name from `daefr weights list` or an hf:// URI (default: daefr, the released model)")
    add_positional_alias(parser, "weights", "-w/--weights")
    add_output(parser, "file to write (.onnx, .ts or .pt2; refused if it exists, unless --force)")
    parser.add_argument("--format", choices=_FORMATS, default=None,
                        help="export format (default: from the output suffix, else onnx)")
    parser.add_argument("--batch", type=int, default=None, help="fixed batch size (default: dynamic)")
    parser.add_argument("--fast", action="store_true", help="export the fast-path graph (default: parity graph)")
    parser.add_argument("--arch", default=None, help="architecture of an official checkpoint when it cannot be "
                        "read off the file: full, tiny")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="ONNX exporter: the tracing one (default, faster) or torch.export based")
    parser.add_argument("--check", action="store_true", help="compare the exported model with eager on seeded inputs")
    parser.add_argument("--check-batch", type=int, default=2, help="inputs for --check (dynamic batch only)")
    add_force(parser, "replace OUTPUT if it exists")


REQUIRED = ("output",)


_SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "exported-program": ".pt2"}


def _format_for(output: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    for name, suffix in _SUFFIXES.items():
        if output.endswith(suffix):
            return name
    return "onnx"


def _output_for(output: str, fmt: str) -> str:
    """``output`` when its suffix is ``fmt``'s; with no export suffix, ``fmt``'s is appended; another is refused."""
    from daefr.errors import ConfigError

    if output.endswith(_SUFFIXES[fmt]):
        return output
    for name, suffix in _SUFFIXES.items():
        if output.endswith(suffix):
            raise ConfigError(f"OUTPUT {output} has the {suffix} suffix of {name} but --format is {fmt}; name it "
                              f"*{_SUFFIXES[fmt]} or pass --format {name}")
    return output + _SUFFIXES[fmt]


def run(args: argparse.Namespace) -> int:
    """Run ``daefr export`` (export the restorer) with the parsed ``args``; returns the exit code."""
    import gc
    import time

    from daefr.errors import ConfigError
    from daefr.interop.export import check_export, export_restorer
    from daefr.interop.restorer_io import load_restorer

    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    from daefr.utils.io import refuse_input_as_output

    fmt = _format_for(args.output, args.format)
    args.output = _output_for(args.output, fmt)
    refuse_input_as_output(args.output, args.weights, "OUTPUT")
    arch = {"preset": args.arch} if args.arch else {}
    restorer = load_restorer(args.weights, **arch)
    start = time.perf_counter()
    # in place: the loaded copy is only exported (one copy of the weights less at the peak, 2.9 -> 2.4 GB
    # for the released model); --check loads the weights again after the export's memory is freed
    path = export_restorer(restorer, args.output, fmt, batch=args.batch, fast=args.fast, opset=args.opset,
                           exporter=args.exporter, overwrite=args.force, in_place=True)
    del restorer
    size = path.stat().st_size / 1e6
    batch = "dynamic" if args.batch is None else str(args.batch)
    print(f"exported {'fast' if args.fast else 'parity'} graph to {path} ({fmt}, batch {batch}, {size:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s)")
    if not args.check:
        return 0
    gc.collect()
    result = check_export(path, load_restorer(args.weights, **arch), batch=args.check_batch, fmt=fmt, in_place=True)
    print(result.summary())
    return 0 if result.passed else 1
