"""The ``Restorer`` API: detect, align, restore (batched across photos) and paste back.

Usage in a notebook::

    from daefr import Restorer
    restorer = Restorer.from_pretrained("DAEFR_model.ckpt")   # or our .safetensors export
    result = restorer.restore("photo.jpg")                      # or an (H, W, 3) uint8 RGB array
    result.restored_image, [face.box for face in result.faces]
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from daefr.errors import ConfigError, DaefrError, ImageReadError
from daefr.inference import optional
from daefr.inference.alignment import align_face, apply_affine, face_template, invert_affine
from daefr.inference.detection import DetectedFace, FaceDetector, select_faces
from daefr.inference.paste import PASTE_MODES, BackgroundUpsampler, PastedFace, draw_boxes, paste_faces
from daefr.models.inference_options import PRECISIONS
from daefr.utils.images import DEFAULT_MAX_PIXELS

K = TypeVar("K")
DEFAULT_FACE_SIZE = 512
#: Largest ``upscale``; the output must also stay within the image reader's pixel limit (DEFAULT_MAX_PIXELS).
MAX_UPSCALE = 8.0


@dataclass
class RestoredFace:
    """One restored face with its detection, crops and alignment.

    ``box`` (x0, y0, x1, y1) and ``landmarks`` (5, 2) in input-photo pixels,
    ``cropped`` and ``restored`` (S, S, 3) uint8 RGB, ``affine`` (2, 3) mapping photo -> crop.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    cropped: np.ndarray
    restored: np.ndarray
    affine: np.ndarray


@dataclass
class RestoreResult:
    """Output of :meth:`Restorer.restore`: the restored image and its faces.

    ``restored_image`` (H*u, W*u, 3) uint8 RGB (the restored
    crop for aligned inputs), the restored ``faces``, and ``faces_found`` before selection.
    """

    restored_image: np.ndarray
    faces: list[RestoredFace]
    faces_found: int
    input_image: np.ndarray
    aligned: bool = False
    seconds: float = 0.0


@dataclass
class _Job:
    """An image waiting for its faces to come back from the network."""

    key: Any
    image: np.ndarray
    detected: list[DetectedFace]
    faces_found: int
    crops: list[np.ndarray]
    affines: list[np.ndarray]
    restored: list[np.ndarray | None] = field(default_factory=list)
    started: float = 0.0
    error: Exception | None = None

    def done(self) -> bool:
        return all(r is not None for r in self.restored)


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to :class:`torch.device`."""
    if str(device) != "auto":
        try:
            chosen = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"invalid device {device!r}: {exc}; use auto, cpu, cuda, cuda:N or mps") from exc
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                              "exist; use cuda:0 or --device cpu")
        mps_backend = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps_backend is not None and mps_backend.is_available()):
            raise ConfigError(f"device {device!r} requested but MPS (Apple GPU) is not available on this machine; "
                              "use --device cpu (or auto)")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_rgb_uint8(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an array or an image path.

    From an array (gray (H, W) or (H, W, 1) is repeated, an alpha
    channel dropped) or from an image path (read by :func:`daefr.utils.images.read_image`).
    """
    if isinstance(image, (str, Path)):
        from daefr.utils.images import read_image

        return np.ascontiguousarray(read_image(image))
    if not isinstance(image, np.ndarray):
        raise ImageReadError(f"expected a numpy array or an image path, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageReadError(f"expected uint8 pixels in [0, 255], got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _face_size_of(model: nn.Module) -> int:
    for name in ("input_size", "resolution", "image_size", "face_size"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_FACE_SIZE


class Restorer:
    """Face restoration of whole photos or aligned crops with any restoration network.

    The network maps
    (B, 3, S, S) in [-1, 1] to (B, 3, S, S) in [-1, 1].

    ``detector`` / ``upsampler``: registry specs (``face_detectors``, ``upsamplers``) or instances;
    ``batch_size``: faces per network call, gathered across photos; ``paste``: ``"residual"`` (default:
    only the network's change is warped back) or ``"direct"`` (the official behaviour) (see :func:`daefr.inference.paste.paste_faces`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        face_size: int | None = None,
        detector: Any = "dlib_hog",
        upsampler: Any = "bicubic",
        batch_size: int = 4,
        paste: str = "residual",
        feather: float = 0.1,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if paste not in PASTE_MODES:
            raise ConfigError(f"paste must be one of {PASTE_MODES}, got {paste!r}")
        self.device = select_device(device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.face_size = int(face_size) if face_size else _face_size_of(model)
        self.batch_size = int(batch_size)
        self.paste = paste
        self.feather = float(feather)
        self._detector_spec = detector
        self._detector: FaceDetector | None = detector if isinstance(detector, FaceDetector) else None
        self._upsampler_spec = upsampler
        self._upsampler: BackgroundUpsampler | None = None
        self.network_seconds = 0.0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        arch: str | dict[str, Any] | None = None,
        fast: bool = False,
        backend: str = "torch",
        threads: int | None = None,
        onnx_options: dict[str, Any] | None = None,
        trust_code: bool = False,
        **kwargs: Any,
    ) -> Restorer:
        """Load our safetensors export or an official ``DAEFR_model.ckpt`` and wrap it.

        ``arch``: for official checkpoints whose architecture cannot be read off the file, an
        architecture name (``release``, ``parity``, ...) or architecture keywords; ``fast``: the restorer's fast inference path
        (:mod:`daefr.models.inference_options`: fused attention and blocks, argmax, channels-last);
        ``backend``: ``torch``, ``onnx``, ``torchscript``, ``exported-program`` or ``auto`` (see
        :func:`daefr.inference.backends.load_network`); ``threads`` / ``onnx_options``: ONNX Runtime
        intra-op threads and session overrides (onnx backend only); ``trust_code``: run a TorchScript file
        from elsewhere (TorchScript is a program; see docs/reliability.md); ``kwargs`` go to :class:`Restorer`.
        """
        from daefr.inference.backends import load_network
        from daefr.utils.weights import resolve_weights_spec

        path = resolve_weights_spec(path, "restorer weights")  # a file, a name (daefr), hf:// or a URL
        options = {"preset": arch} if isinstance(arch, str) else dict(arch or {})
        network = load_network(path, backend=backend, fast=fast, precision=precision, arch=options,
                               threads=threads, onnx_options=onnx_options, trust_code=trust_code)
        return cls(network, device=device, precision=precision, **kwargs)

    # ----- components ------------------------------------------------------------------------
    @property
    def detector(self) -> FaceDetector:
        """The face detector, built from its registry spec on first use."""
        if self._detector is None:
            spec = self._detector_spec
            if callable(spec) and not isinstance(spec, (str, dict)):
                self._detector = spec  # any callable image -> [DetectedFace] will do
            else:
                from daefr.registry import REGISTRY

                self._detector = REGISTRY.build("face_detectors", spec)
        return self._detector

    @property
    def upsampler(self) -> BackgroundUpsampler:
        """The background upsampler, built from its registry spec on first use."""
        if self._upsampler is None:
            spec = self._upsampler_spec
            if callable(spec) and not isinstance(spec, (str, dict)):
                self._upsampler = spec
            else:
                from daefr.registry import REGISTRY

                self._upsampler = REGISTRY.build("upsamplers", spec)
        return self._upsampler

    # ----- network ---------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def restore_faces(self, crops: np.ndarray) -> np.ndarray:
        """Run the network on (N, S, S, 3) uint8 crops in batches of ``batch_size``; same shape out."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ConfigError(f"expected (N, S, S, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        out = np.empty_like(crops)
        start = time.perf_counter()
        for i in range(0, len(crops), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(crops[i : i + self.batch_size])).to(self.device)
            x = chunk.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            with torch.inference_mode(), self._autocast():
                y = self.model(x)
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ConfigError(f"the restorer must return a tensor shaped {tuple(x.shape)}, got {got}")
            pixels = ((y.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
            out[i : i + self.batch_size] = pixels.permute(0, 2, 3, 1).cpu().numpy()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.network_seconds += time.perf_counter() - start
        return out

    # ----- preparing and finishing one photo -------------------------------------------------
    def _prepare(self, key: Any, image: Any, aligned: bool, selection: dict[str, Any]) -> _Job:
        started = time.perf_counter()
        rgb = as_rgb_uint8(image)
        size = self.face_size
        if aligned:
            cv2 = optional.cv2()
            h, w = rgb.shape[:2]
            interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC
            crop = cv2.resize(rgb, (size, size), interpolation=interp)
            affine = np.array([[size / w, 0, 0.5 * size / w - 0.5], [0, size / h, 0.5 * size / h - 0.5]])
            points = apply_affine(invert_affine(affine), face_template(size))
            face = DetectedFace(np.array([0.0, 0.0, w, h]), 1.0, points)
            job = _Job(key, rgb, [face], 1, [crop], [affine], [None], started)
            return job
        found = self.detector(rgb)
        chosen = select_faces(found, rgb.shape, **selection)
        crops, affines = [], []
        for face in chosen:
            crop, affine = align_face(rgb, face.points5, size)
            crops.append(crop)
            affines.append(affine)
        return _Job(key, rgb, chosen, len(found), crops, affines, [None] * len(crops), started)

    def _finish(self, job: _Job, aligned: bool, upscale: float, draw_box: bool) -> RestoreResult:
        faces = [
            RestoredFace(d.box, d.score, d.points5, c, r, a)  # type: ignore[arg-type]
            for d, c, r, a in zip(job.detected, job.crops, job.restored, job.affines)
        ]
        if aligned:
            assert faces[0].restored is not None
            image = faces[0].restored
        else:
            height, width = job.image.shape[:2]
            out_h, out_w = round(height * upscale), round(width * upscale)
            if out_h * out_w > DEFAULT_MAX_PIXELS:
                raise ConfigError(
                    f"upscale {upscale:g} would make a {out_w}x{out_h} image ({out_w * out_h / 1e6:.0f} Mpx), above "
                    f"the {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpx limit of daefr's image reader (size limit hit); "
                    "use a smaller --upscale"
                )
            canvas = self.upsampler(job.image, upscale)
            pasted = [PastedFace(f.restored, f.affine, f.cropped) for f in faces]
            image = paste_faces(canvas, pasted, upscale=upscale, feather=self.feather, mode=self.paste)
            if draw_box:
                image = draw_boxes(image, [f.box for f in faces], upscale)
        return RestoreResult(image, faces, job.faces_found, job.image, aligned, time.perf_counter() - job.started)

    # ----- public entry points ---------------------------------------------------------------
    def restore(
        self,
        image: Any,
        aligned: bool = False,
        *,
        only_center_face: bool = False,
        max_faces: int | None = None,
        min_face_size: float = 0.0,
        upscale: float = 1.0,
        draw_box: bool = False,
    ) -> RestoreResult:
        """Restore one photo (or one aligned crop) given as an (H, W, 3) uint8 RGB array or a path."""
        ((_, result),) = list(self.restore_many(
            [(None, image)], aligned=aligned, only_center_face=only_center_face, max_faces=max_faces,
            min_face_size=min_face_size, upscale=upscale, draw_box=draw_box,
        ))
        if isinstance(result, Exception):
            raise result
        return result

    def restore_many(
        self,
        items: Iterable[tuple[K, Any]],
        aligned: bool = False,
        *,
        only_center_face: bool = False,
        max_faces: int | None = None,
        min_face_size: float = 0.0,
        upscale: float = 1.0,
        draw_box: bool = False,
        return_exceptions: bool = False,
    ) -> Iterator[tuple[K, RestoreResult | Exception]]:
        """Restore ``(key, image)`` pairs, running faces of consecutive photos together in full batches.

        Results come back in input order, each as soon as all its faces are done. With
        ``return_exceptions``, a photo that fails (a :class:`DaefrError`) yields its exception
        instead of stopping the stream.
        """
        if not 0 < upscale <= MAX_UPSCALE:
            raise ConfigError(f"upscale must be in (0, {MAX_UPSCALE:g}], got {upscale:g} (size limit)")
        selection = dict(only_center_face=only_center_face, max_faces=max_faces, min_face_size=min_face_size)
        jobs: deque[_Job] = deque()
        queue: list[tuple[_Job, int]] = []

        def run(count: int) -> None:
            batch, queue[:] = queue[:count], queue[count:]
            try:
                restored = self.restore_faces(np.stack([job.crops[i] for job, i in batch]))
            except Exception as exc:  # e.g. out of memory: the photos of this batch fail, the rest go on
                if not return_exceptions:
                    raise
                for job, i in batch:
                    job.error = job.error or exc
                    job.restored[i] = job.crops[i]
                return
            for (job, i), face in zip(batch, restored):
                job.restored[i] = face

        def ready() -> Iterator[tuple[Any, RestoreResult | Exception]]:
            while jobs and (jobs[0].error is not None or jobs[0].done()):
                job = jobs.popleft()
                if job.error is not None:
                    yield job.key, job.error
                    continue
                try:
                    yield job.key, self._finish(job, aligned, upscale, draw_box)
                except DaefrError as exc:
                    if not return_exceptions:
                        raise
                    yield job.key, exc

        for key, image in items:
            try:
                job = self._prepare(key, image, aligned, selection)
            except (DaefrError, ValueError, RuntimeError) as exc:  # this photo only (dlib raises RuntimeError)
                if not return_exceptions:
                    raise
                job = _Job(key, np.zeros((0, 0, 3), np.uint8), [], 0, [], [], [], error=exc)
            jobs.append(job)
            queue.extend((job, i) for i in range(len(job.crops)))
            while len(queue) >= self.batch_size:
                run(self.batch_size)
            yield from ready()
        if queue:
            run(len(queue))
        yield from ready()
