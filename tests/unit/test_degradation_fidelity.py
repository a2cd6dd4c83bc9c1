"""Fidelity of the batched degradation against the per-image OpenCV reference, for fixed parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daefr.data.degradation import apply_degradation, jpeg_compress, mixed_kernels, ops  # noqa: E402
from reference_degradation import (  # noqa: E402
    KERNEL_TYPES,
    ref_blur,
    ref_jpeg,
    ref_kernel,
    ref_lq_size,
    ref_noise,
    ref_quantize,
    ref_resize,
)

H, W = 72, 88  # non-square, not a multiple of 16: catches swapped axes and block padding errors

# measured on the face below (and on 512x512 faces in benchmarks/degradation.py): our JPEG vs OpenCV's
# libjpeg-turbo is 44-53 dB depending on quality; the tests hold it to these bounds
JPEG_PSNR_BOUND = 40.0
JPEG_MEAN_LEVEL_BOUND = 0.6  # mean absolute difference in 8-bit levels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def to_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def to_np(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real face (HWC RGB float32 in [0, 1]) when ../shared is present, else a seeded synthetic image."""
    import cv2

    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces" / "hq512"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if files:
        img = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)[:, :, ::-1]
        return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    coarse = rng.random((6, 6, 3)).astype(np.float32)
    img = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    img[H // 3 : H // 2] += 0.3
    return np.clip(img, 0, 1)


KERNEL_CASES = [
    ("iso", 41, 2.5, 2.5, 0.0, 1.0),
    ("aniso", 41, 6.0, 1.2, 0.9, 1.0),
    ("generalized_iso", 39, 3.0, 3.0, 0.0, 0.7),
    ("generalized_aniso", 41, 4.0, 1.5, -2.0, 2.5),
    ("plateau_iso", 41, 1.5, 1.5, 0.0, 1.5),
    ("plateau_aniso", 39, 3.0, 0.8, 2.8, 1.2),
]


def _kernels(cases: list[tuple[str, int, float, float, float, float]]) -> torch.Tensor:
    cols = list(zip(*cases))
    return mixed_kernels(
        torch.tensor([KERNEL_TYPES.index(t) for t in cols[0]]),
        torch.tensor(cols[2]),
        torch.tensor(cols[3]),
        torch.tensor(cols[4]),
        torch.tensor(cols[5]),
        torch.tensor(cols[1]),
    )


def test_kernels_match_reference() -> None:
    ours = _kernels(KERNEL_CASES)
    assert ours.shape == (len(KERNEL_CASES), 41, 41)
    for i, (kind, size, sx, sy, th, beta) in enumerate(KERNEL_CASES):
        ref = ref_kernel(kind, size, sx, sy, th, beta)
        pad = (41 - size) // 2
        got = ours[i].numpy()
        assert np.abs(got[pad : 41 - pad, pad : 41 - pad] - ref).max() < 1e-6, kind
        assert np.all(got[:pad] == 0) and np.all(got[:, :pad] == 0), "smaller kernels need a zero border"
        assert abs(float(got.sum()) - 1.0) < 1e-5


def test_blur_matches_reference(face: np.ndarray) -> None:
    kernels = _kernels(KERNEL_CASES)
    batch = to_t(face).expand(len(KERNEL_CASES), -1, -1, -1)
    out = ops.blur(batch, kernels)
    assert out.shape == batch.shape
    for i, (kind, size, sx, sy, th, beta) in enumerate(KERNEL_CASES):
        ref = ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta))
        assert psnr(to_np(out[i]), ref) > 45.0, kind


def test_blur_rejects_images_smaller_than_kernel() -> None:
    with pytest.raises(ValueError, match="too small"):
        ops.blur(torch.rand(1, 3, 16, 16), _kernels(KERNEL_CASES[:1]))


@pytest.mark.parametrize("scales", [(0.8, 1.7, 3.3, 8.0, 30.0)])
def test_resize_matches_reference(face: np.ndarray, scales: tuple[float, ...]) -> None:
    b = len(scales)
    lq_h, lq_w = ops.lq_sizes(H, W, torch.tensor(scales, dtype=torch.float32))
    expected = [ref_lq_size(H, W, float(torch.tensor(s, dtype=torch.float32))) for s in scales]
    assert list(zip(lq_h.tolist(), lq_w.tolist())) == expected
    full_h, full_w = torch.full((b,), H), torch.full((b,), W)
    canvas = (int(lq_h.max()), int(lq_w.max()) + 5)
    down = ops.resize(to_t(face).expand(b, -1, -1, -1), full_h, full_w, lq_h, lq_w, canvas)
    assert down.shape == (b, 3, *canvas)
    smalls = []
    for i, (lh, lw) in enumerate(expected):
        ref = ref_resize(face, lh, lw)
        assert psnr(to_np(down[i, :, :lh, :lw]), ref) > 45.0, f"downscale to {lh}x{lw}"
        # beyond its own size, each sample's canvas repeats its last row / column
        assert torch.equal(down[i, :, lh - 1, lw:], down[i, :, lh - 1, lw - 1 : lw].expand(-1, canvas[1] - lw))
        smalls.append(ref)
    # back up from the reference's own small images, each in the top-left of a shared canvas
    canvas_in = torch.zeros(b, 3, *canvas)
    for i, small in enumerate(smalls):
        canvas_in[i, :, : small.shape[0], : small.shape[1]] = to_t(small)[0]
    up = ops.resize(canvas_in, lq_h, lq_w, full_h, full_w, (H, W))
    for i, small in enumerate(smalls):
        assert psnr(to_np(up[i]), ref_resize(small, H, W)) > 45.0, f"upscale from {small.shape[:2]}"


QUALITIES = (30, 60, 80, 95, 100)


def test_jpeg_matches_opencv_within_stated_bound(face: np.ndarray) -> None:
    # per-sample sizes in one canvas, as the pipeline uses it
    sizes = [(H, W), (37, 23), (64, 64), (17, 50), (H, W)]
    canvas = torch.zeros(len(QUALITIES), 3, H, W)
    for i, (h, w) in enumerate(sizes):
        canvas[i, :, :h, :w] = to_t(face[:h, :w])[0]
    hv = torch.tensor([s[0] for s in sizes])
    wv = torch.tensor([s[1] for s in sizes])
    out = jpeg_compress(canvas, torch.tensor(QUALITIES), hv, wv)
    assert out.shape == canvas.shape
    for i, ((h, w), q) in enumerate(zip(sizes, QUALITIES)):
        ref = ref_jpeg(face[:h, :w], q)
        got = to_np(out[i, :, :h, :w])
        assert np.allclose(got * 255, np.round(got * 255), atol=1e-3), "JPEG output must be 8-bit"
        assert psnr(got, ref) > JPEG_PSNR_BOUND, f"quality {q}, size {h}x{w}"
        assert np.abs(got - ref).mean() * 255 < JPEG_MEAN_LEVEL_BOUND, f"quality {q}, size {h}x{w}"
    # lower quality must lose more
    errs = [psnr(to_np(out[i, :, :H, :W]), face) for i in (0, 4)]
    assert errs[0] < errs[1] - 5.0


def _one_sample_params(kind: str, size: int, sx: float, sy: float, theta: float, beta: float, scale: float,
                       noise: float, quality: int) -> dict[str, torch.Tensor]:
    lq_h, lq_w = ops.lq_sizes(H, W, torch.tensor([scale], dtype=torch.float32))
    return {
        "kernel_type": torch.tensor([KERNEL_TYPES.index(kind)]), "kernel_size": torch.tensor([size]),
        "sigma_x": torch.tensor([sx]), "sigma_y": torch.tensor([sy]), "theta": torch.tensor([theta]),
        "beta": torch.tensor([beta]), "scale": torch.tensor([scale]), "lq_height": lq_h, "lq_width": lq_w,
        "noise_sigma": torch.tensor([noise]), "poisson": torch.tensor([False]),
        "poisson_scale": torch.tensor([1.0]), "noise_seed": torch.tensor([1234]),
        "jpeg_quality": torch.tensor([quality]), "color_shift": torch.zeros(1, 3), "gray": torch.tensor([False]),
        "jitter_pt": torch.tensor([False]), "jitter_order": torch.arange(4)[None], "brightness": torch.ones(1),
        "contrast": torch.ones(1), "saturation": torch.ones(1), "hue": torch.zeros(1),
    }


def _pipeline_noise(params: dict[str, torch.Tensor]) -> np.ndarray:
    """The standard-normal noise the pipeline draws for a one-sample batch (its documented scheme)."""
    lh, lw = int(params["lq_height"]), int(params["lq_width"])
    gen = torch.Generator().manual_seed(int(params["noise_seed"][0]))
    noise = torch.randn((1, 3, -(-lh // 16) * 16, -(-lw // 16) * 16), generator=gen)
    return to_np(noise[0, :, :lh, :lw])


CHAIN_CASES = [
    ("iso", 41, 1.0, 1.0, 0.0, 1.0, 0.8, 5.0),
    ("aniso", 41, 7.0, 2.0, 1.1, 1.0, 3.7, 20.0),
    ("iso", 39, 0.1, 0.1, 0.0, 1.0, 2.0, 12.0),
    ("generalized_aniso", 41, 3.0, 1.0, -0.4, 2.0, 6.5, 0.0),
]


@pytest.mark.parametrize("case", CHAIN_CASES, ids=[c[0] + f"_s{c[6]}" for c in CHAIN_CASES])
def test_full_chain_without_jpeg_matches_reference(face: np.ndarray, case: tuple) -> None:
    kind, size, sx, sy, th, beta, scale, noise = case
    params = _one_sample_params(kind, size, sx, sy, th, beta, scale, noise, quality=0)
    ours = to_np(apply_degradation(to_t(face), params)[0])
    lh, lw = int(params["lq_height"]), int(params["lq_width"])
    x = ref_resize(ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta)), lh, lw)
    x = ref_noise(x, _pipeline_noise(params), noise / 255.0)
    ref = ref_quantize(ref_resize(x, H, W))
    assert psnr(ours, ref) > 40.0


def test_full_chain_with_jpeg_within_bound(face: np.ndarray) -> None:
    kind, size, sx, sy, th, beta, scale, noise = CHAIN_CASES[1]
    params = _one_sample_params(kind, size, sx, sy, th, beta, scale, noise, quality=70)
    ours = to_np(apply_degradation(to_t(face), params)[0])
    lh, lw = int(params["lq_height"]), int(params["lq_width"])
    x = ref_resize(ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta)), lh, lw)
    x = ref_jpeg(ref_noise(x, _pipeline_noise(params), noise / 255.0), 70)
    ref = ref_quantize(ref_resize(x, H, W))
    assert psnr(ours, ref) > JPEG_PSNR_BOUND


def test_fused_blur_resize_matches_reference(face: np.ndarray) -> None:
    # scale 4 and 6.5 take the row-pruned inverse FFT, 0.9 the full one
    cases = [KERNEL_CASES[1], KERNEL_CASES[0], KERNEL_CASES[3]]
    scales = torch.tensor([4.0, 0.9, 6.5])
    lq_h, lq_w = ops.lq_sizes(H, W, scales)
    kernels = _kernels(cases)
    batch = to_t(face).expand(3, -1, -1, -1)
    for sel in ([0, 2], [0, 1, 2]):
        idx = torch.tensor(sel)
        canvas = (int(lq_h[idx].max()), int(lq_w[idx].max()))
        out = ops.blur_resize(batch[idx], kernels[idx], lq_h[idx], lq_w[idx], canvas)
        assert out.shape == (len(sel), 3, *canvas)
        for j, i in enumerate(sel):
            kind, size, sx, sy, th, beta = cases[i]
            lh, lw = int(lq_h[i]), int(lq_w[i])
            ref = ref_resize(ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta)), lh, lw)
            assert psnr(to_np(out[j, :, :lh, :lw]), ref) > 45.0, (sel, kind)
