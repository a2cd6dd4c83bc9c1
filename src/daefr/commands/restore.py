"""``daefr restore INPUT... -o OUT [--weights SPEC]``: restore faces in photos or aligned face crops.

Outputs (names keep the input's stem plus --suffix; a non-empty ``OUT`` is refused unless --force, and
even then nothing is overwritten: when ``OUT`` already holds a name, or two inputs share a stem, the
input gets the first free ``stem_1``, ``stem_2``, ... for all of its files, and a note says so):

* ``OUT/restored_imgs/<stem>.png``      whole photo with the restored faces pasted back (not with --aligned)
* ``OUT/restored_faces/<stem>_NN.png``  each restored face (``<stem>.png`` with --aligned)
* ``OUT/cropped_faces/<stem>_NN.png``   each aligned input crop (``<stem>.png`` with --aligned)
* ``OUT/comparisons/<stem>.png``        input | result side by side (--compare)
* ``OUT/restored_videos/<name>``        a video input restored frame by frame, audio copied (PyAV)

At start, restore prints the model's input size, device and backend; faces much larger than the
model (the restored face is pasted back at that size: blocky) and aligned inputs of another size (they
are resized to the model's size, and the outputs have that size) are warned about once.
Gray inputs give gray outputs. --fidelity W blends the network output with its input face:
W x input + (1 - W) x restored (0, the default: the restored face as DAEFR makes it; 1: the input).

Every file is written atomically. A file that fails (unreadable, no face found, ...) is reported with a
one-line reason and the batch goes on; the exit code is 1 when any input failed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "restore"
HELP = "restore faces in photos (detect, align, restore, paste back) or in aligned face crops"

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string such as a path
    return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``daefr restore`` options to ``parser``."""
    from daefr.commands._options import add_device, add_force, add_no_progress, add_output, add_weights

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (__doc__ or "").split("\n\n", 1)[1]
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns "
                        "(quote patterns); video files (.mp4, ...) are restored frame by frame")
    add_output(parser, "output folder (created if needed; a non-empty one is refused unless --force)",
               required=True)
    add_force(parser, "write into a non-empty output folder (existing files are kept: clashing names get _1, _2)")
    add_weights(parser, "daefr", "restorer weights: a daefr .safetensors export, the official DAEFR_model.ckpt, an "
                "exported .onnx/.ts/.pt2, a name from `daefr weights list` or an hf:// URI (default: daefr, the "
                "released model, downloaded on first use)")
    parser.add_argument("--arch", default=None,
                        help="architecture of an official checkpoint (default: read off its shapes): full, tiny, "
                             "a JSON object of keywords such as '{\"ch\": 64}' or a .json/.yaml file")
    parser.add_argument("--fast", action="store_true",
                        help="fast inference path: fused attention and blocks, argmax, channels-last (faster; "
                             "deviates slightly from the official numerics; --precision bf16 adds bf16 autocast)")
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="run a TorchScript (.ts) file made elsewhere: it is a program that can do anything when "
                             "loaded; without this flag such a file is refused")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx", "torchscript", "exported-program"),
                        default="auto", help="auto (default): by the --weights file (.onnx: ONNX Runtime, .ts: "
                        "TorchScript, .pt2: ExportedProgram, weights: torch); or force one (a weights file is "
                        "exported first)")
    parser.add_argument("--aligned", action=argparse.BooleanOptionalAction, default=False,
                        help="inputs are aligned face crops (FFHQ-style), resized to the model size (default: off, "
                             "whole photos)")
    faces = parser.add_argument_group("whole photos")
    faces.add_argument("--detector", default="dlib_hog", help="face detector (`daefr list face_detectors`)")
    faces.add_argument("--detector-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="detector option, repeatable, e.g. landmarks=5, upsample=2, weights=/path/file")
    faces.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    faces.add_argument("--max-faces", type=int, default=None, help="restore at most N faces (the largest)")
    faces.add_argument("--min-face-size", type=float, default=0.0, metavar="PX",
                       help="skip faces whose box is smaller than PX pixels")
    faces.add_argument("--upscale", type=float, default=1.0, metavar="N",
                       help="resize the whole photo by N (background by --upsampler)")
    faces.add_argument("--upsampler", default="bicubic", help="background upsampler (`daefr list upsamplers`)")
    faces.add_argument("--paste", choices=("direct", "residual"), default="residual",
                       help="residual (default): add only what the network changed, so untouched detail is not resampled; "
                            "direct: paste the restored face as the official pipeline does")
    faces.add_argument("--draw-box", action="store_true", help="draw the detected face boxes on restored_imgs")
    faces.add_argument("--fidelity", type=float, default=0.0, metavar="W",
                       help="blend weight of the input face in [0, 1]: W x input + (1 - W) x restored, per face, "
                            "before pasting (default 0: DAEFR's output unchanged; DAEFR has no fidelity "
                            "knob inside the network, so this is a pixel blend)")
    out = parser.add_argument_group("output and speed")
    out.add_argument("--compare", action="store_true", help="also write input | result to OUT/comparisons/")
    out.add_argument("--ext", choices=("auto", "png", "jpg", "webp"), default="png",
                     help="output image format; auto: the input's (png for other formats); default png")
    out.add_argument("--suffix", default="", help="appended to every output name: photo.png -> photo_SUFFIX.png")
    out.add_argument("--batch-size", type=int, default=4, help="images per network call (faces, across photos)")
    add_device(parser)
    out.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="autocast precision of the network")
    out.add_argument("--no-audio", action="store_true", help="videos: do not copy the audio track")
    add_no_progress(parser)
    out.add_argument("--summary-json", default=None, metavar="FILE", help="also write the summary as JSON")


REQUIRED = ("output",)


def run(args: argparse.Namespace) -> int:
    """Run ``daefr restore`` (restore faces) with the parsed ``args``; returns the exit code."""
    from daefr.commands._restore_run import restore_command
    from daefr.interop.convert import parse_arch

    return restore_command(args, parse_arch(args.arch), VIDEO_EXTENSIONS)
