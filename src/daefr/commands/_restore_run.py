"""The work behind ``daefr restore``: gather inputs, restore in batches, write outputs, summarise."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daefr.errors import ConfigError, DaefrError, ImageReadError
from daefr.utils.batch import BatchTracker
from daefr.utils.reasons import one_line_reason

_RACE_RETRIES = 100
OUTPUT_FOLDERS = ("restored_imgs", "restored_faces", "cropped_faces", "comparisons", "restored_videos")


def _reason(path: Path | str, exc: BaseException | str) -> str:
    """One line, without the path prefix that read errors carry (the summary prints the path)."""
    text = one_line_reason(exc) if isinstance(exc, BaseException) else str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class OutputWriter:
    """Writes one input's files under ``root`` with a stem that collides with nothing on disk or in this run."""

    def __init__(self, root: Path, ext: str, aligned: bool, compare: bool, suffix: str = "") -> None:
        self.root = root
        self.ext = ext  # png, jpg, webp, or auto: the input's own format
        self.aligned = aligned
        self.compare = compare
        self.suffix = f"_{suffix}" if suffix else ""
        self._taken: set[str] = set()
        self._ext_now = "png" if ext == "auto" else ext
        self.renamed: list[tuple[Path, str]] = []  # (input, the stem its outputs got) when the name was taken
        self._last_stem = ""

    def plan(self, stem: str, n_faces: int) -> dict[str, list[Path]]:
        """Every file an input with ``stem`` and ``n_faces`` faces will produce, by output folder."""
        def name(folder: str, suffix: str = "") -> Path:
            return self.root / folder / f"{stem}{suffix}.{self._ext_now}"

        if self.aligned:
            files = {"restored_faces": [name("restored_faces")], "cropped_faces": [name("cropped_faces")]}
        else:
            files = {
                "restored_imgs": [name("restored_imgs")],
                "restored_faces": [name("restored_faces", f"_{i:02d}") for i in range(n_faces)],
                "cropped_faces": [name("cropped_faces", f"_{i:02d}") for i in range(n_faces)],
            }
        if self.compare:
            files["comparisons"] = [name("comparisons")]
        return files

    def reserve(self, stem: str, n_faces: int) -> dict[str, list[Path]]:
        """The plan for the first free stem among ``stem``, ``stem_1``, ``stem_2``, ..."""
        for k in itertools.count():
            candidate = stem if k == 0 else f"{stem}_{k}"
            if candidate in self._taken:
                continue
            files = self.plan(candidate, n_faces)
            if not any(p.exists() or p.is_symlink() for paths in files.values() for p in paths):
                self._taken.add(candidate)
                self._last_stem = candidate
                return files
        raise AssertionError("unreachable")

    def write(self, source: Path, result: Any) -> list[Path]:
        """Write the outputs of one :class:`~daefr.inference.restorer.RestoreResult`; returns the paths."""
        from daefr.utils.images import write_image

        # Another process writing into the same folder may take a name between reserve() and the
        # (non-clobbering) write: then this input's files written so far are removed and it moves to
        # the next free stem, instead of failing.
        self._ext_now = output_ext(source, self.ext)
        stem = f"{source.stem}{self.suffix}"
        source_pixels = getattr(result, "input_image", None)
        if source_pixels is None and result.faces:
            source_pixels = result.faces[0].cropped
        gray = source_pixels is not None and is_gray(source_pixels)
        for _attempt in range(_RACE_RETRIES):
            files = self.reserve(stem, len(result.faces))
            written: list[Path] = []
            try:
                for path, image in self._images(files, result):
                    written.append(write_image(path, to_gray(image) if gray else image, overwrite=False))
            except FileExistsError:
                for path in written:  # ours: created by this call (overwrite=False never replaces)
                    path.unlink(missing_ok=True)
                continue
            if self._last_stem != stem:
                self.renamed.append((source, self._last_stem))
            return written
        raise DaefrError(f"{source}: every output name up to {source.stem}_{_RACE_RETRIES} was taken by other "
                         "writers while this one wrote")

    def _images(self, files: dict[str, list[Path]], result: Any) -> list[tuple[Path, np.ndarray]]:
        from daefr.inference.paste import side_by_side

        images: list[tuple[Path, np.ndarray]] = []
        if self.aligned:
            images.append((files["restored_faces"][0], result.faces[0].restored))
            images.append((files["cropped_faces"][0], result.faces[0].cropped))
            before = result.faces[0].cropped
        else:
            images.append((files["restored_imgs"][0], result.restored_image))
            images += list(zip(files["restored_faces"], (f.restored for f in result.faces)))
            images += list(zip(files["cropped_faces"], (f.cropped for f in result.faces)))
            before = result.input_image
        if self.compare:
            images.append((files["comparisons"][0], side_by_side(before, result.restored_image)))
        return images


_EXT_OF_SUFFIX = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


def output_ext(source: Path, ext: str) -> str:
    """``ext``, or with ``auto`` the input's own format (png for formats restore does not write)."""
    return _EXT_OF_SUFFIX.get(source.suffix.lower(), "png") if ext == "auto" else ext


def is_gray(image: np.ndarray) -> bool:
    """True for (H, W) images and RGB images whose three channels are equal (a gray photo read as RGB)."""
    data = np.asarray(image)
    if data.ndim == 2:
        return True
    return bool(data.ndim == 3 and data.shape[2] >= 3 and np.array_equal(data[..., 0], data[..., 1])
                and np.array_equal(data[..., 1], data[..., 2]))


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 BT.601 luma; (H, W) unchanged."""
    data = np.asarray(image)
    if data.ndim == 2:
        return data
    luma = data[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def has_visible_files(folder: Path) -> bool:
    """True when ``folder`` holds a file or folder whose name does not start with a dot, at any depth."""
    if not folder.is_dir():
        return False
    for entry in folder.rglob("*"):
        if not any(part.startswith(".") for part in entry.relative_to(folder).parts) and entry.is_file():
            return True
    return False


def _detector_spec(args: argparse.Namespace) -> Any:
    options = dict(args.detector_arg or [])
    return {"name": args.detector, **options} if options else args.detector


def _check(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from daefr.inference.restorer import MAX_UPSCALE

    if not 0 < args.upscale <= MAX_UPSCALE:
        raise ConfigError(f"--upscale must be in (0, {MAX_UPSCALE:g}] (size limit: the output must stay readable), "
                          f"got {args.upscale:g}")
    if args.max_faces is not None and args.max_faces < 1:
        raise ConfigError(f"--max-faces must be >= 1, got {args.max_faces}")
    if args.min_face_size < 0:
        raise ConfigError(f"--min-face-size must be >= 0, got {args.min_face_size}")
    fidelity = getattr(args, "fidelity", 0.0)
    if not 0.0 <= fidelity <= 1.0:
        raise ConfigError(f"--fidelity must be in [0, 1] (0: restored face, 1: input face), got {fidelity:g}")
    suffix = getattr(args, "suffix", "")
    if suffix and (any(c in suffix for c in "/\\") or suffix.startswith(".")):
        raise ConfigError(f"--suffix {suffix!r} must be a plain name part (no slash, not starting with a dot)")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    if not getattr(args, "force", True) and has_visible_files(out):
        raise ConfigError(f"--output {out} is not empty; pass --force to add to it (existing files are kept: "
                          "clashing names get _1, _2, ...) or choose an empty folder")


def _gather(inputs: list[str], tracker: BatchTracker, exts: tuple[str, ...]) -> list[Path]:
    from daefr.utils.images import collect_inputs

    paths: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        try:
            found = collect_inputs([raw], exts=exts)
        except ImageReadError as exc:  # a missing input or empty folder fails alone
            tracker.failed(raw, _reason(raw, exc))
            continue
        for path in found:
            if path not in seen:
                seen.add(path)
                paths.append(path)
    return paths


def _no_face_reason(found: int, aligned: bool) -> str:
    if found:
        return f"{found} face(s) found, none kept by --min-face-size / --max-faces / --only-center-face"
    return "no face found"


@dataclass
class _Progress:
    """What a restore run has done so far (kept when it is interrupted)."""

    faces_found: int = 0
    faces_restored: int = 0
    restorer: Any = None
    interrupted: bool = False


def _say(*parts: Any, file: Any = None) -> None:
    """print(), but a closed stdout (``daefr restore ... | head``) silences output instead of failing."""
    try:
        print(*parts, file=file or sys.stdout, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null (fd and object), so neither later prints nor the exit flush fail."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives until exit)


def restore_command(
    args: argparse.Namespace, arch: str | dict[str, Any] | None, video_exts: tuple[str, ...]
) -> int:
    """Run ``daefr restore``; returns the exit code (1 when any input failed, 130 when interrupted).

    Ctrl-C stops after the current batch: what was written stays, and the summary (and
    ``--summary-json``) reports what was done, with ``interrupted: true``. A closed stdout (broken
    pipe) silences the messages; the work and the summary file go on.
    """
    from daefr.utils.images import IMAGE_EXTENSIONS

    _check(args)
    started = time.perf_counter()
    tracker = BatchTracker()
    paths = _gather(list(args.inputs), tracker, tuple(IMAGE_EXTENSIONS) + tuple(video_exts))
    if args.summary_json:
        from daefr.utils.io import refuse_input_as_output

        refuse_input_as_output(args.summary_json, [*paths, args.weights], "--summary-json")
    progress = _Progress()
    try:
        _restore_all(args, arch, video_exts, paths, tracker, progress)
    except KeyboardInterrupt:
        progress.interrupted = True
    return _summarise(args, tracker, progress, started, len(paths))


def _restore_all(args: argparse.Namespace, arch: str | dict[str, Any] | None, video_exts: tuple[str, ...],
                 paths: list[Path], tracker: BatchTracker, state: _Progress) -> None:
    from tqdm import tqdm

    from daefr.inference.restorer import Restorer
    from daefr.utils.images import read_image
    from daefr.utils.io import clean_orphaned_temps

    videos = [p for p in paths if p.suffix.lower() in video_exts]
    images = [p for p in paths if p.suffix.lower() not in video_exts]
    if not paths:
        return
    from daefr.commands._restore_setup import announce, check_backend, setup_components, wrap_fidelity

    for folder in OUTPUT_FOLDERS:  # hidden temporaries of a run that was killed mid-write
        clean_orphaned_temps(Path(args.output) / folder)
    # set-up errors (a misspelled detector or upsampler, detector weights, a backend that cannot run the
    # file) are one line here, before any weights are loaded and before the loop
    backend = check_backend(args.weights, getattr(args, "backend", "auto"))
    detector, upsampler = setup_components(args, _detector_spec(args), needs_detector=bool(videos) or not args.aligned)
    restorer = state.restorer = Restorer.from_pretrained(
        args.weights, device=args.device, precision=args.precision, arch=arch, fast=args.fast, backend=backend,
        trust_code=bool(getattr(args, "trust_torchscript", False)), detector=detector, upsampler=upsampler, batch_size=args.batch_size, paste=args.paste,
    )
    wrap_fidelity(restorer, getattr(args, "fidelity", 0.0))
    sizes = announce(restorer, args, backend, _say)
    writer = OutputWriter(Path(args.output), args.ext, args.aligned, args.compare, getattr(args, "suffix", ""))
    bar = tqdm(total=len(images), unit="img", disable=args.no_progress or not images, file=sys.stderr,
               desc="restore")

    def readable() -> Iterator[tuple[Path, np.ndarray]]:
        for path in images:
            try:
                image = read_image(path)
            except ImageReadError as exc:
                tracker.failed(path, _reason(path, exc))
                bar.update()
                continue
            yield path, image

    stream = restorer.restore_many(
        readable(), aligned=args.aligned, only_center_face=args.only_center_face, max_faces=args.max_faces,
        min_face_size=args.min_face_size, upscale=args.upscale, draw_box=args.draw_box, return_exceptions=True,
    )
    try:
        for path, result in stream:
            bar.update()
            if isinstance(result, Exception):
                tracker.failed(path, _reason(path, result))
                continue
            state.faces_found += result.faces_found
            if not result.faces:
                tracker.failed(path, _no_face_reason(result.faces_found, args.aligned))
                continue
            sizes.observe(result)
            try:
                writer.write(path, result)
            except (DaefrError, OSError, ValueError) as exc:
                tracker.failed(path, _reason(path, exc))
                continue
            if writer.renamed:
                source, stem = writer.renamed.pop()
                _say(f"note: {source}: outputs named {stem} ({source.stem}{writer.suffix} is taken in {args.output})",
                     file=sys.stderr)
            state.faces_restored += len(result.faces)
            tracker.succeeded(path)
    finally:
        bar.close()
    for video in videos:
        from daefr.inference.video import restore_video
        from daefr.utils.io import unique_path

        wanted = Path(args.output) / "restored_videos" / f"{video.stem}{writer.suffix}{video.suffix.lower()}"
        target = unique_path(wanted)
        if target != wanted:
            _say(f"note: {video}: output named {target.name} ({wanted.name} is taken in {args.output})",
                 file=sys.stderr)
        try:
            stats = restore_video(
                restorer, video, target, keep_audio=not args.no_audio, progress=not args.no_progress,
                aligned=args.aligned, only_center_face=args.only_center_face, max_faces=args.max_faces,
                min_face_size=args.min_face_size, upscale=args.upscale, draw_box=args.draw_box,
            )
        except (DaefrError, OSError, ValueError, RuntimeError) as exc:
            tracker.failed(video, _reason(video, exc))
            continue
        state.faces_found += stats.faces_found
        state.faces_restored += stats.faces_restored
        audio = "audio copied" if stats.audio_copied else "no audio"
        _say(f"{video}: {stats.frames} frames, {stats.frames_with_faces} with faces, {audio} -> {target}")
        tracker.succeeded(video)


def _summarise(args: argparse.Namespace, tracker: BatchTracker, state: _Progress, started: float,
               n_inputs: int) -> int:
    summary = tracker.summary()
    seconds = time.perf_counter() - started
    if state.interrupted:
        _say(f"interrupted: stopped after {summary.total} of {n_inputs} input(s); outputs written so far are "
             "complete", file=sys.stderr)
    _say(summary.report("inputs restored"))
    faces_restored = state.faces_restored
    per_face = f"{seconds / faces_restored:.3f} s/face" if faces_restored else "n/a s/face"
    net = state.restorer.network_seconds if state.restorer is not None else 0.0
    net_face = f", network {net / faces_restored:.3f} s/face" if faces_restored else ""
    _say(f"faces: {state.faces_found} found, {faces_restored} restored; {seconds:.1f} s total, {per_face}{net_face}")
    _say(f"outputs: {Path(args.output)}/{{{','.join(OUTPUT_FOLDERS)}}}")
    if args.summary_json:
        payload = summary.to_dict() | {"faces_found": state.faces_found, "faces_restored": faces_restored,
                                       "seconds": round(seconds, 3), "network_seconds": round(net, 3),
                                       "interrupted": state.interrupted, "inputs": n_inputs}
        from daefr.utils.io import atomic_write_text

        atomic_write_text(args.summary_json, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 130 if state.interrupted else summary.exit_code
