"""``daefr restore`` set-up: checks before the loop, the start-up line, size warnings, the fidelity blend."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import ConfigError, DaefrError

#: A face whose crop window in the photo is this many times the model's input size is "much larger".
DOWNSCALE_WARNING = 2.0


def check_backend(weights: str, backend: str) -> str:
    """The backend that runs ``weights``, checked against the file's content.

    The backend to run ``weights`` with: ``auto`` picks by the file's content; a forced backend that
    cannot run the file is one line saying what the file is. Names and URIs go through unchanged.
    """
    from daefr.inference.file_kind import BACKEND_OF_KIND, DESCRIPTIONS, weights_file_kind

    path = Path(weights)
    if not path.is_file():
        return backend
    kind = weights_file_kind(path)
    if kind is None:
        return backend
    runs = BACKEND_OF_KIND[kind]
    exported = runs != "torch"
    if backend == "auto":
        if exported and path.suffix.lower() != {"onnx": ".onnx", "torchscript": ".ts",
                                                  "exported-program": ".pt2"}[runs]:
            raise ConfigError(f"--weights {path} is {DESCRIPTIONS[kind]} but is not named like one; rename it "
                              f"with its suffix or pass --backend {runs}")
        return runs if exported else "auto"
    if exported and backend != runs:
        raise ConfigError(f"--backend {backend} cannot run {path}: it is {DESCRIPTIONS[kind]}; pass --backend "
                          f"{runs} or --backend auto")
    return backend


def _build(group: str, spec: Any, option: str) -> Any:
    from daefr.registry import REGISTRY
    from daefr.utils.reasons import one_line_reason

    try:
        return REGISTRY.build(group, spec)
    except DaefrError as exc:
        raise type(exc)(f"{option}: {one_line_reason(exc)}") from None
    except (TypeError, ValueError, ImportError, OSError) as exc:
        raise ConfigError(f"{option}: cannot build it ({one_line_reason(exc)})") from None


def setup_components(args: argparse.Namespace, detector_spec: Any, needs_detector: bool) -> tuple[Any, Any]:
    """The face detector and background upsampler, built now or left as specs.

    The detector and upsampler, built now when whole photos need them (a bad name or missing detector
    weights is one line before any work); their specs otherwise (built on first use, if ever).
    """
    if not needs_detector:
        return detector_spec, args.upsampler
    detector = _build("face_detectors", detector_spec, f"--detector {args.detector}")
    upsampler = _build("upsamplers", args.upsampler, f"--upsampler {args.upsampler}")
    return detector, upsampler


def wrap_fidelity(restorer: Any, weight: float) -> None:
    """Blend the restorer's network output with its input by ``weight`` (0: unchanged)."""
    if weight > 0.0:
        from daefr.inference.fidelity import FidelityBlend

        restorer.model = FidelityBlend(restorer.model, weight)


class SizeWatch:
    """Warns once when faces are much larger than the model, and once per aligned input size that differs."""

    def __init__(self, face_size: int, aligned: bool, say: Callable[..., None]) -> None:
        self.face_size, self.aligned, self.say = face_size, aligned, say
        self.warned_large = False
        self.aligned_sizes: set[tuple[int, int]] = set()

    def observe(self, result: Any) -> None:
        """Look at one :class:`~daefr.inference.restorer.RestoreResult`."""
        import sys

        size = self.face_size
        if self.aligned or result.aligned:
            h, w = result.input_image.shape[:2]
            if (h, w) != (size, size) and (h, w) not in self.aligned_sizes:
                self.aligned_sizes.add((h, w))
                self.say(f"note: aligned inputs of {w}x{h} px are resized to the model's {size}x{size} px; the "
                         f"restored faces are written at {size}x{size}", file=sys.stderr)
            return
        if self.warned_large:
            return
        for face in result.faces:
            scale = float(np.sqrt(abs(np.linalg.det(np.asarray(face.affine)[:, :2]))))
            window = size / scale if scale > 0 else 0.0
            if window > DOWNSCALE_WARNING * size:
                self.warned_large = True
                self.say(f"WARNING: faces of about {window:.0f} px are restored by a {size} px model and pasted "
                         f"back at {window:.0f} px: they will look blocky. Use a model trained at a larger size "
                         "(e.g. --weights daefr, 512 px) or shrink the photos (e.g. --upscale "
                         f"{max(size / window, 0.01):.2f})", file=sys.stderr)
                return


def announce(restorer: Any, args: argparse.Namespace, backend: str, say: Callable[..., None]) -> SizeWatch:
    """Print the model's input size, device and backend; return the size watcher for the loop."""
    import sys

    size = int(restorer.face_size)
    network = getattr(restorer.model, "network", restorer.model)  # under a FidelityBlend
    found = getattr(network, "backend", None)
    kind = found if isinstance(found, str) else (backend if backend != "auto" else "torch")
    fidelity = getattr(args, "fidelity", 0.0)
    extra = f", fidelity {fidelity:g}" if fidelity else ""
    say(f"restore: {args.weights}: model input {size}x{size} px, device {restorer.device}, backend {kind}{extra}",
        file=sys.stderr)
    return SizeWatch(size, bool(args.aligned), say)
