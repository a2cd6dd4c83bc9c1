"""Per-stage timings of the face pipeline on scikit-image's astronaut (CPU by default).

Stages: dlib HOG detection (+68 landmarks) at upsample 0 and 1, alignment warp, paste-back (direct and
residual), and the network per face at batch 1 versus batch N (random weights; ``--arch tiny`` or
``full``). Reports the median of ``--repeats`` runs of each, all in one process.

    .venv/bin/python benchmarks/restore_faces.py --arch tiny --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (lazy init, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from skimage import data

    from daefr.inference.alignment import align_face
    from daefr.inference.detection import DlibHogDetector
    from daefr.inference.paste import PastedFace, paste_faces
    from daefr.inference.restorer import Restorer
    from daefr.models.restorer import DAEFRRestorer

    photo = np.ascontiguousarray(data.astronaut())
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    rows = []
    for upsample in (0, 1):
        detector = DlibHogDetector(upsample=upsample)
        rows.append((f"detect dlib_hog upsample={upsample} (512x512 photo)",
                     median_seconds(lambda d=detector: d(photo), args.repeats)))
    face = max(DlibHogDetector(upsample=0)(photo), key=lambda f: f.score)
    torch.manual_seed(0)
    model = DAEFRRestorer.from_config(args.arch)
    size = int(model.input_size or 512)
    crop, affine = align_face(photo, face.points5, size)
    rows.append((f"align (warp to {size})", median_seconds(lambda: align_face(photo, face.points5, size),
                                                           args.repeats)))
    for mode in ("direct", "residual"):
        rows.append((f"paste {mode}", median_seconds(
            lambda m=mode: paste_faces(photo, [PastedFace(crop, affine, crop)], mode=m), args.repeats)))
    restorer = Restorer(model, device=args.device, face_size=size, batch_size=args.batch)
    one = np.stack([crop])
    many = np.stack([crop] * args.batch)
    per_face_1 = median_seconds(lambda: restorer.restore_faces(one), args.repeats)
    per_face_n = median_seconds(lambda: restorer.restore_faces(many), args.repeats) / args.batch
    rows.append((f"network {args.arch} per face, batch 1", per_face_1))
    rows.append((f"network {args.arch} per face, batch {args.batch}", per_face_n))
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:9.1f} ms")
    print(f"batching speed-up per face (batch {args.batch} vs 1): {per_face_1 / per_face_n:.2f}x")


if __name__ == "__main__":
    main()
