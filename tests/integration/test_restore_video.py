"""`daefr restore` on a video: frame by frame, faces batched across frames, audio kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from daefr.cli import main

av = pytest.importorskip("av")
pytest.importorskip("dlib")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")


class IdentityRestorer(nn.Module):
    input_size = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _write_clip(path: Path, frames: list[np.ndarray], with_audio: bool) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"qscale": "2"}
        audio = out.add_stream("aac", rate=16000) if with_audio else None
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            t = np.arange(16000 * len(frames) // 10) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            samples = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            samples.sample_rate = 16000
            for packet in audio.encode(samples):
                out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)


def _read_clip(path: Path) -> tuple[list[np.ndarray], bool]:
    with av.open(str(path)) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
        return frames, bool(clip.streams.audio)


def test_video_frames_restored_and_audio_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import daefr.interop.restorer_io as restorer_io

    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: IdentityRestorer())
    photo = skdata.astronaut()
    frames = [np.ascontiguousarray(np.roll(photo, 4 * i, axis=1)) for i in range(3)]
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, frames, with_audio=True)
    source, _ = _read_clip(clip)
    out = tmp_path / "out"
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused: the loader is replaced")
    code = main(["restore", str(clip), "-o", str(out), "-w", str(weights), "--max-faces", "1",
                 "--paste", "residual", "--batch-size", "2", "--no-progress", "--detector-arg", "upsample=0"])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "3 frames, 3 with faces, audio copied" in report
    restored, has_audio = _read_clip(out / "restored_videos" / "clip.mp4")
    assert has_audio and len(restored) == 3 and restored[0].shape == (512, 512, 3)
    # identity network: only the second lossy encoding separates output from input
    for before, after in zip(source, restored):
        assert np.abs(before.astype(int) - after.astype(int)).mean() < 3.0
    assert not list((out / "restored_videos").glob(".*"))  # no partial file left

    # --no-audio drops the track; a second run (--force: the folder holds results) never overwrites the first
    assert main(["restore", str(clip), "-o", str(out), "-w", str(weights), "--no-audio", "--no-progress", "--force",
                 "--detector-arg", "upsample=0", "--max-faces", "1"]) == 0
    assert not _read_clip(out / "restored_videos" / "clip_1.mp4")[1]


def test_broken_video_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import daefr.interop.restorer_io as restorer_io

    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: IdentityRestorer())
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused: the loader is replaced")
    code = main(["restore", str(bad), "-o", str(tmp_path / "out"), "-w", str(weights), "--no-progress"])
    report = capsys.readouterr().out
    assert code == 1 and "FAILED" in report and "broken.mp4" in report
    assert not (tmp_path / "out" / "restored_videos" / "broken.mp4").exists()
