"""Kornia backends (blur, JPEG) and GFPGAN's torchvision-style colour jitter against the references."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_degradation_fidelity import (  # noqa: E402
    CHAIN_CASES,
    KERNEL_CASES,
    QUALITIES,
    H,
    W,
    _kernels,
    _one_sample_params,
    _pipeline_noise,
    face,
    psnr,
    to_np,
    to_t,
)

from daefr.data.degradation import Degradation, apply_degradation, apply_to_batch, gfpgan, ops  # noqa: E402
from daefr.data.degradation.backends import (  # noqa: E402
    KORNIA_BLUR_MAX_KERNEL,
    kornia_blur,
    kornia_jpeg,
    resolve_blur_backend,
)
from daefr.data.degradation.color import JITTER_KEYS, JITTER_OPS, adjust, color_jitter_pt  # noqa: E402
from daefr.testing.degradations import check_degradation, is_8bit  # noqa: E402
from reference_degradation import (  # noqa: E402
    ref_adjust,
    ref_blur,
    ref_color_jitter_pt,
    ref_jpeg,
    ref_kernel,
    ref_noise,
    ref_quantize,
    ref_resize,
)

__all__ = ["face"]  # the fixture, re-used from the fidelity tests

# kornia's differentiable JPEG (own table scaling, polynomial rounding, bilinear chroma resampling, no
# 8-bit decode) vs OpenCV's libjpeg-turbo, measured on the 72x88 face of these tests: 37.8-50 dB and a
# mean of 0.6-2.2 8-bit levels over qualities 30-100 (41.9-51.9 dB on three 512x512 FFHQ faces)
KORNIA_JPEG_PSNR_BOUND = 36.0
KORNIA_JPEG_MEAN_LEVEL_BOUND = 2.5


def test_kornia_blur_matches_reference(face: np.ndarray) -> None:
    kernels = _kernels(KERNEL_CASES)
    batch = to_t(face).expand(len(KERNEL_CASES), -1, -1, -1)[:, :, :, :]
    out = kornia_blur(batch, kernels)
    assert out.shape == batch.shape and out.dtype == torch.float32
    for i, (kind, size, sx, sy, th, beta) in enumerate(KERNEL_CASES):
        ref = ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta))
        assert psnr(to_np(out[i]), ref) > 45.0, kind
    with pytest.raises(ValueError, match="too small"):
        kornia_blur(torch.rand(1, 3, 16, 16), kernels[:1])


def test_kornia_blur_resize_matches_reference(face: np.ndarray) -> None:
    cases = [KERNEL_CASES[1], KERNEL_CASES[0], KERNEL_CASES[3]]
    lq_h, lq_w = ops.lq_sizes(H, W, torch.tensor([4.0, 0.9, 6.5]))
    canvas = (int(lq_h.max()), int(lq_w.max()))
    out = ops.blur_resize(to_t(face).expand(3, -1, -1, -1), _kernels(cases), lq_h, lq_w, canvas, kornia_blur)
    for i, (kind, size, sx, sy, th, beta) in enumerate(cases):
        lh, lw = int(lq_h[i]), int(lq_w[i])
        ref = ref_resize(ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta)), lh, lw)
        assert psnr(to_np(out[i, :, :lh, :lw]), ref) > 45.0, kind


@pytest.mark.parametrize("case", CHAIN_CASES[:2], ids=[c[0] for c in CHAIN_CASES[:2]])
def test_full_chain_with_kornia_blur_matches_reference(face: np.ndarray, case: tuple) -> None:
    kind, size, sx, sy, th, beta, scale, noise = case
    params = _one_sample_params(kind, size, sx, sy, th, beta, scale, noise, quality=0)
    ours = to_np(apply_degradation(to_t(face), params, blur_backend="kornia")[0])
    fft = to_np(apply_degradation(to_t(face), params, blur_backend="fft")[0])
    lh, lw = int(params["lq_height"]), int(params["lq_width"])
    x = ref_resize(ref_blur(face, ref_kernel(kind, size, sx, sy, th, beta)), lh, lw)
    ref = ref_quantize(ref_resize(ref_noise(x, _pipeline_noise(params), noise / 255.0), H, W))
    assert psnr(ours, ref) > 40.0
    # the backends differ by float rounding only: at most one 8-bit level, on few pixels
    diff = np.abs(ours - fft) * 255.0
    assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).mean() < 0.01


def test_kornia_jpeg_within_stated_bound(face: np.ndarray) -> None:
    sizes = [(H, W), (37, 23), (64, 64), (17, 50), (H, W)]
    canvas = torch.zeros(len(QUALITIES), 3, H, W)
    for i, (h, w) in enumerate(sizes):
        canvas[i, :, :h, :w] = to_t(face[:h, :w])[0]
    hv, wv = torch.tensor([s[0] for s in sizes]), torch.tensor([s[1] for s in sizes])
    out = kornia_jpeg(canvas, torch.tensor(QUALITIES), hv, wv)
    assert out.shape == canvas.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    for i, ((h, w), q) in enumerate(zip(sizes, QUALITIES)):
        got, ref = to_np(out[i, :, :h, :w]), ref_jpeg(face[:h, :w], q)
        assert psnr(got, ref) > KORNIA_JPEG_PSNR_BOUND, f"quality {q}, size {h}x{w}"
        assert np.abs(got - ref).mean() * 255 < KORNIA_JPEG_MEAN_LEVEL_BOUND, f"quality {q}, size {h}x{w}"
        # it removes as much as libjpeg does: distances to the input agree within 1.5 dB
        assert abs(psnr(got, face[:h, :w]) - psnr(ref, face[:h, :w])) < 1.5, f"quality {q}"


def test_kornia_jpeg_is_differentiable() -> None:
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    kornia_jpeg(x, torch.tensor([50, 90]), torch.tensor([32, 20]), torch.tensor([32, 24])).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_module_backends_conform_and_differ_little() -> None:
    small = Degradation(kernel_sizes=(7,), blur_backend="kornia", jpeg_backend="kornia")
    check_degradation(small)
    hq = torch.rand(3, 3, 48, 48)
    base = Degradation(kernel_sizes=(21,))
    out = base(hq, torch.Generator().manual_seed(0))
    for blur, jpeg, max_mean in (("kornia", "libjpeg", 0.05), ("fft", "kornia", 3.0)):
        other = Degradation(kernel_sizes=(21,), blur_backend=blur, jpeg_backend=jpeg).replay(hq, out.params).lq
        assert is_8bit(other)
        assert float((other - out.lq).abs().mean()) * 255 < max_mean, (blur, jpeg)
    with pytest.raises(ValueError, match="unknown blur backend"):
        Degradation(blur_backend="cuda")
    with pytest.raises(ValueError, match="unknown JPEG backend"):
        Degradation(jpeg_backend="pil")
    with pytest.raises(ValueError, match="unknown blur backend"):
        apply_degradation(hq, out.params, blur_backend="direct")


def test_auto_blur_backend_rule() -> None:
    assert resolve_blur_backend("auto", 41) == "fft"
    assert resolve_blur_backend("auto", KORNIA_BLUR_MAX_KERNEL) == "kornia"
    assert resolve_blur_backend("auto", KORNIA_BLUR_MAX_KERNEL + 2) == "fft"
    assert resolve_blur_backend("kornia", 41) == "kornia" and resolve_blur_backend("fft", 3) == "fft"


# ----- GFPGAN's torchvision-style colour jitter -------------------------------------------------------------

FACTORS = {"brightness": (0.5, 1.37), "contrast": (0.5, 1.4), "saturation": (0.0, 1.5), "hue": (-0.1, 0.07)}


@pytest.mark.parametrize("op", JITTER_OPS)
def test_each_jitter_op_matches_torchvision_semantics(face: np.ndarray, op: str) -> None:
    values = FACTORS[op]
    batch = to_t(face).expand(len(values), -1, -1, -1)
    out = adjust(batch, JITTER_OPS.index(op), torch.tensor(values))
    for i, f in enumerate(values):
        assert psnr(to_np(out[i]), ref_adjust(face, op, f)) > 45.0, (op, f)


def test_color_jitter_pt_order_and_mask_match_reference(face: np.ndarray) -> None:
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]]
    params = {"jitter_pt": torch.tensor([True, True, False, True]), "jitter_order": torch.tensor(orders),
              "brightness": torch.tensor([0.6, 1.4, 1.5, 1.2]), "contrast": torch.tensor([1.3, 0.6, 0.5, 0.8]),
              "saturation": torch.tensor([0.2, 1.5, 0.0, 1.1]), "hue": torch.tensor([0.08, -0.1, 0.1, -0.03])}
    batch = to_t(face).expand(4, -1, -1, -1)
    out = color_jitter_pt(batch, params)
    assert torch.equal(out[2], batch[2])  # jitter off: unchanged
    for i in (0, 1, 3):
        factors = {name: float(params[name][i]) for name in JITTER_OPS}
        ref = ref_color_jitter_pt(face, [JITTER_OPS[j] for j in orders[i]], factors)
        assert psnr(to_np(out[i]), ref) > 45.0, i
    # the order matters (the test would not notice a fixed order otherwise)
    fixed = ref_color_jitter_pt(face, list(JITTER_OPS), {n: float(params[n][1]) for n in JITTER_OPS})
    assert psnr(to_np(out[1]), fixed) < 40.0


def test_gfpgan_jitter_params_ranges_and_probability() -> None:
    module = gfpgan()
    n = 4000
    p = module.sample_params(n, 64, 64, torch.Generator().manual_seed(9))
    assert set(JITTER_KEYS) <= set(p)
    assert stats.binomtest(int(p["jitter_pt"].sum()), n, 0.3).pvalue > 1e-3
    for name, (lo, hi) in (("brightness", (0.5, 1.5)), ("contrast", (0.5, 1.5)), ("saturation", (0.0, 1.5)),
                           ("hue", (-0.1, 0.1))):
        v = p[name].double().numpy()
        assert v.min() >= lo and v.max() <= hi, name
        assert stats.kstest(v, "uniform", args=(lo, hi - lo)).pvalue > 1e-3, name
    order = p["jitter_order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    # every operation is equally likely at every step
    for step in range(4):
        assert stats.chisquare(np.bincount(order[:, step].numpy(), minlength=4)).pvalue > 1e-3
    # the jitter is drawn after everything else: switching it off leaves the other parameters alone
    off = gfpgan(color_jitter_pt_prob=0.0).sample_params(n, 64, 64, torch.Generator().manual_seed(9))
    assert not off["jitter_pt"].any()
    assert all(torch.equal(off[k], p[k]) for k in p if k != "jitter_pt")


def test_gfpgan_jitter_changes_lq_only_and_replays() -> None:
    hq = torch.rand(4, 3, 48, 48)
    module = gfpgan(color_jitter_pt_prob=1.0, color_jitter_prob=0.0)
    out = module(hq, torch.Generator().manual_seed(4))
    assert out.hq is None and bool(out.params["jitter_pt"].all())
    assert torch.equal(module.replay(hq, out.params).lq, out.lq)
    assert torch.equal(module(hq, torch.Generator().manual_seed(4)).lq, out.lq)
    plain = dict(out.params, jitter_pt=torch.zeros(4, dtype=torch.bool))
    assert not torch.equal(module.replay(hq, plain).lq, out.lq)
    # the jitter keys are part of the params (no format without them ever shipped)
    old = {k: v for k, v in out.params.items() if k not in JITTER_KEYS}
    with pytest.raises(KeyError, match="jitter_pt"):
        module.replay(hq, old)
    check_degradation(module)


def test_gt_gray_turns_the_hq_of_gray_samples_gray() -> None:
    hq = torch.rand(4, 3, 48, 48) * 2 - 1
    module = gfpgan(gray_prob=0.5, gt_gray=True)
    batch = apply_to_batch({"hq": hq}, module, torch.Generator().manual_seed(1))
    gray = batch["degradation_params"]["gray"]
    assert 0 < int(gray.sum()) < 4
    new_hq = batch["hq"]
    for i in range(4):
        channels_equal = torch.allclose(new_hq[i, 0], new_hq[i, 1]) and torch.allclose(new_hq[i, 1], new_hq[i, 2])
        assert channels_equal == bool(gray[i]), i
        if not gray[i]:
            assert torch.allclose(new_hq[i], hq[i], atol=1e-6)
    luma = (0.299 * hq[:, 0] + 0.587 * hq[:, 1] + 0.114 * hq[:, 2])
    assert torch.allclose(new_hq[gray][:, 0], luma[gray], atol=1e-5)
    # without gt_gray the HQ batch is left alone
    assert gfpgan(gray_prob=1.0)(hq * 0.5 + 0.5, torch.Generator().manual_seed(1)).hq is None
