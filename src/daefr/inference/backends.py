"""Network backends for :class:`daefr.inference.restorer.Restorer`: eager torch, or an exported file.

:class:`~daefr.inference.restorer.Restorer` takes any ``nn.Module`` mapping (B, 3, S, S) in [-1, 1] to
(B, 3, S, S); this module builds one from a weights file and a backend name:

* ``torch`` -- our safetensors export or the official checkpoint, eager; ``fast`` applies
  :func:`daefr.models.inference_options.optimize_for_inference` (``precision`` sets its autocast);
* ``onnx`` -- an ``.onnx`` file from ``daefr export`` run by ONNX Runtime (CPU; memory-lean session
  settings, :data:`daefr.interop.export.ONNX_SESSION_DEFAULTS`), or a weights file that is exported to
  ONNX first (into a temporary folder, removed when the network is garbage-collected or at exit);
* ``torchscript`` / ``exported-program`` -- ``.ts`` / ``.pt2`` files from ``daefr export``; a ``.ts`` file
  is a program and runs only with ``trust_code=True`` (or when this process exported it);
* ``auto`` -- by file suffix (``.onnx``, ``.ts``, ``.pt2``), else ``torch``.

Usage: ``Restorer(load_network("model.onnx", backend="onnx"), ...)`` or ``daefr restore --backend onnx``.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from daefr.errors import ConfigError

__all__ = ["BACKENDS", "ExportedNetwork", "load_network"]

BACKENDS = ("auto", "torch", "onnx", "torchscript", "exported-program")
_SUFFIX = {".onnx": "onnx", ".ts": "torchscript", ".pt2": "exported-program"}


class ExportedNetwork(nn.Module):
    """An exported restorer as an ``nn.Module``: forward (B, 3, S, S) in [-1, 1] -> restored (B, 3, S, S).

    ``run`` is the callable of :func:`daefr.interop.export.load_exported` (returns restored and codes);
    ``input_size`` the face size stored in the file. The wrapped graph runs where it was exported for
    (ONNX Runtime: CPU); inputs are moved there and results back to the input's device.
    """

    def __init__(self, run: Any, input_size: int | None, backend: str, path: Path) -> None:
        super().__init__()
        self.run = run
        self.input_size = input_size
        self.backend = backend
        self.path = path
        self.fixed_batch: int | None = None

    def forward(self, lq: Tensor) -> Tensor:
        """(B, 3, S, S) -> restored (B, 3, S, S) float32 on ``lq``'s device."""
        if self.fixed_batch is not None and lq.shape[0] != self.fixed_batch:
            # a fixed-batch export runs one chunk at a time, padding the last one
            outs = []
            for i in range(0, lq.shape[0], self.fixed_batch):
                chunk = lq[i : i + self.fixed_batch]
                pad = self.fixed_batch - chunk.shape[0]
                if pad:
                    chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
                outs.append(self._call(chunk)[: self.fixed_batch - pad])
            return torch.cat(outs)
        return self._call(lq)

    def _call(self, lq: Tensor) -> Tensor:
        with torch.inference_mode():
            restored = self.run(lq.detach().float().cpu())[0]
        return restored.float().to(lq.device)


def _resolve(path: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return _SUFFIX.get(path.suffix.lower(), "torch")


def _exported_file(path: Path, backend: str, arch: dict[str, Any] | None, fast: bool) -> Path:
    """``path`` when it is already a file of ``backend``, else a temporary export of the weights at ``path``."""
    if _SUFFIX.get(path.suffix.lower()) == backend:
        return path
    if path.suffix.lower() in _SUFFIX:
        raise ConfigError(f"{path} is a {_SUFFIX[path.suffix.lower()]} file; pass --backend "
                          f"{_SUFFIX[path.suffix.lower()]} (or auto)")
    from daefr.interop.export import EXPORT_FORMATS, export_restorer
    from daefr.interop.restorer_io import load_restorer

    restorer = load_restorer(path, **(arch or {}))
    folder = Path(tempfile.mkdtemp(prefix="daefr-export-"))
    target = folder / (path.stem + EXPORT_FORMATS[backend])
    # in place: the restorer is not needed after the export (one copy of the weights less at the peak)
    return export_restorer(restorer, target, backend, fast=fast, batch=None, in_place=True)


def load_network(path: str | Path, *, backend: str = "auto", fast: bool = False, precision: str = "fp32",
                 arch: dict[str, Any] | None = None, threads: int | None = None,
                 onnx_options: dict[str, Any] | None = None, trust_code: bool = False) -> nn.Module:
    """A network for :class:`~daefr.inference.restorer.Restorer` from ``path`` and a backend name.

    ``arch``: keywords for :func:`daefr.interop.restorer_io.load_restorer` (e.g. ``{"preset": "parity"}``);
    ``fast``: the fast inference path (torch backend; for exports made here, the fast graph);
    ``precision``: autocast of the fast path (``fp32``, ``bf16``, ``fp16``); ``threads``: ONNX Runtime
    intra-op threads (default: its own choice); ``onnx_options``: overrides of
    :data:`daefr.interop.export.ONNX_SESSION_DEFAULTS` (the memory-lean session settings);
    ``trust_code``: run a TorchScript file (code) from elsewhere; without it such a file is refused with
    :class:`~daefr.errors.UnsafeFileError` (:func:`daefr.interop.export.load_exported`).
    """
    path = Path(path)
    kind = _resolve(path, backend)
    if kind == "torch":
        from daefr.interop.restorer_io import load_restorer

        restorer = load_restorer(path, **(arch or {}))
        if not fast:
            return restorer
        from daefr.models.inference_options import InferenceOptions, optimize_for_inference

        return optimize_for_inference(restorer, InferenceOptions(fast=True, precision=precision))
    from daefr.interop.export import load_exported, read_export_metadata

    exported = _exported_file(path, kind, arch, fast)
    if exported != path:
        # the torch model exported just now is garbage: collect it before the session allocates its copy
        # (the ONNX session then hands the freed heap back to the OS, ONNX_SESSION_DEFAULTS)
        gc.collect()
    meta = read_export_metadata(exported)
    size_text = meta.get("input_size", "")
    run = load_exported(exported, kind, threads=threads, onnx_options=onnx_options, trust_code=trust_code)
    network = ExportedNetwork(run, int(size_text) if size_text.isdigit() else None, kind, exported)
    batch_text = meta.get("batch", "dynamic")
    network.fixed_batch = int(batch_text) if batch_text.isdigit() else None
    if exported != path:
        # the temporary export (0.5 GB for the released model) goes with the network, or at exit
        weakref.finalize(network, shutil.rmtree, exported.parent, ignore_errors=True)
    return network
