"""What a weights file is, read from its first bytes (and a zip's member names), never from its name alone.

Used to choose a backend for ``daefr restore --backend auto`` and to say what a file is when a forced
backend cannot run it (an ``.onnx`` given to the torch backend, a TorchScript file given to ONNX Runtime).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

__all__ = ["BACKEND_OF_KIND", "DESCRIPTIONS", "weights_file_kind"]

#: kind -> words for messages
DESCRIPTIONS = {
    "safetensors": "a safetensors weights file",
    "checkpoint": "a PyTorch checkpoint (torch.save / Lightning / the official .ckpt)",
    "onnx": "an ONNX model (from `daefr export --format onnx`)",
    "torchscript": "a TorchScript archive (from `daefr export --format torchscript`)",
    "exported-program": "a torch.export ExportedProgram (from `daefr export --format exported-program`)",
}
#: kind -> the backend that runs it directly (weights run on torch, or are exported for another backend)
BACKEND_OF_KIND = {"safetensors": "torch", "checkpoint": "torch", "onnx": "onnx", "torchscript": "torchscript",
                   "exported-program": "exported-program"}


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "checkpoint"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") or "serialized_exported_program" in n or "/models/" in n for n in names):
        return "exported-program"
    return "checkpoint"


def weights_file_kind(path: str | Path) -> str | None:
    """``safetensors``, ``checkpoint``, ``onnx``, ``torchscript``, ``exported-program``, or None (unknown)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        size = path.stat().st_size
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(path)
    if head[:1] == b"\x80":  # a legacy (non-zip) pickle
        return "checkpoint"
    if len(head) >= 9:
        (header,) = struct.unpack("<Q", head[:8])
        if 0 < header < size and head[8:9] == b"{":
            return "safetensors"
    # ONNX is a protobuf ModelProto: field 1 (ir_version, varint) first; the producer name follows soon
    if head[:1] == b"\x08" and (b"pytorch" in head or b"onnx" in head.lower() or path.suffix.lower() == ".onnx"):
        return "onnx"
    return None
