"""Restore every frame of a video (PyAV), keeping the audio track by copying its packets.

Frames go through :meth:`Restorer.restore_many`, so faces of consecutive frames share network
batches. The output is written to a temporary file beside the target and renamed when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import DaefrError, PluginLoadError

VIDEO_HINT = "pip install 'daefr[video]'"


@dataclass
class VideoStats:
    """Counts for one restored video."""

    frames: int
    frames_with_faces: int
    faces_found: int
    faces_restored: int
    audio_copied: bool


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise PluginLoadError(f"PyAV is needed to read and write videos ({exc}); install it with: {VIDEO_HINT}") from exc
    return av


def _output_size(restorer: Any, stream: Any, options: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of the restored frames; cropped to even sizes later (4:2:0 chroma needs them)."""
    if options.get("aligned"):
        return int(restorer.face_size), int(restorer.face_size)
    scale = float(options.get("upscale", 1.0))
    return max(1, int(round(stream.width * scale))), max(1, int(round(stream.height * scale)))


def restore_video(
    restorer: Any,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    keep_audio: bool = True,
    codec: str | None = None,
    crf: int = 18,
    progress: bool = False,
    **options: Any,
) -> VideoStats:
    """Restore ``source`` frame by frame into ``target`` (the container follows its extension).

    ``options`` go to :meth:`Restorer.restore_many` (``only_center_face``, ``max_faces``, ``upscale``, ...).
    Frames without a face are written unchanged (resized by ``upscale``). ``codec`` defaults to H.264
    (libx264) when available, else MPEG-4 part 2. Raises :class:`DaefrError` for unreadable input.
    """
    av = _av()
    src, dst = Path(source), Path(target)
    try:
        container = av.open(str(src))
    except Exception as exc:  # PyAV raises its own error types for missing/invalid files
        raise DaefrError(f"{src}: cannot open as a video ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise DaefrError(f"{src}: has no video stream")
        vin = container.streams.video[0]
        ain = container.streams.audio[0] if (keep_audio and container.streams.audio) else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        total = vin.frames or None
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
        stats = VideoStats(0, 0, 0, 0, False)
        try:
            with av.open(str(tmp), "w") as out:
                aout = None
                if ain is not None:
                    try:
                        aout = out.add_stream_from_template(ain)
                    except Exception:  # codec not allowed in this container: drop the audio
                        aout = None
                stats.audio_copied = aout is not None
                vout = out.add_stream(codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4"),
                                      rate=rate)
                width, height = _output_size(restorer, vin, options)
                vout.width, vout.height = width - width % 2, height - height % 2
                vout.pix_fmt = "yuv420p"
                if vout.codec_context.name == "libx264":
                    vout.options = {"crf": str(crf)}

                def frames() -> Iterator[tuple[int, np.ndarray]]:
                    streams = [vin] + ([ain] if aout is not None else [])
                    index = 0
                    for packet in container.demux(*streams):
                        if packet.stream.type == "audio":
                            if packet.dts is not None and aout is not None:
                                packet.stream = aout
                                out.mux(packet)
                            continue
                        for frame in packet.decode():
                            yield index, frame.to_ndarray(format="rgb24")
                            index += 1

                bar = None
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="frame", desc=src.name)
                for _, result in restorer.restore_many(frames(), **options):
                    if isinstance(result, Exception):
                        raise result
                    image = result.restored_image[: vout.height, : vout.width]
                    if image.shape[:2] != (vout.height, vout.width):
                        raise DaefrError(f"{src}: frame {stats.frames} is {image.shape[1]}x{image.shape[0]}, "
                                         f"expected {vout.width}x{vout.height} (size changes are not supported)")
                    stats.frames += 1
                    stats.faces_found += result.faces_found
                    stats.faces_restored += len(result.faces)
                    stats.frames_with_faces += bool(result.faces)
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                    for packet in vout.encode(frame):
                        out.mux(packet)
                    if bar is not None:
                        bar.update()
                if bar is not None:
                    bar.close()
                if stats.frames == 0:
                    raise DaefrError(f"{src}: no video frames could be decoded")
                for packet in vout.encode():
                    out.mux(packet)
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()
    return stats
