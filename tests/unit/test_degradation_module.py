"""Degradation module contract: conformance, dtypes, layouts, seeds, replay, registry, configs, batch glue."""

from __future__ import annotations

import pytest
import torch

from daefr.data.degradation import (
    PARAM_KEYS,
    PRESETS,
    Degradation,
    apply_degradation,
    apply_to_batch,
    degrade_batch,
    preset,
)
from daefr.data.degradation.pipeline import size_groups
from daefr.errors import ConfigError
from daefr.registry import REGISTRY
from daefr.testing.degradations import check_degradation, is_8bit


def _images(b: int = 4, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(b, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["degradation", *PRESETS])
def test_registered_components_pass_the_conformance_check(name: str) -> None:
    module = REGISTRY.build("degradations", name)
    assert isinstance(module, Degradation)
    check_degradation(module)


def test_poisson_and_generalized_kernels_conform() -> None:
    check_degradation(Degradation(kernel_list=("generalized_iso", "plateau_aniso"), kernel_prob=(1, 1),
                                  kernel_sizes=(21, 41), poisson_prob=0.5, gray_prob=0.5))


def test_conformance_check_catches_a_broken_module() -> None:
    class Unquantised(Degradation):
        def forward(self, hq, generator=None):  # type: ignore[override]
            out = super().forward(hq, generator)
            out.lq = (out.lq + 0.001).clamp(0, 1)
            return out

    with pytest.raises(AssertionError, match="8-bit"):
        check_degradation(Unquantised())


def test_output_shape_dtype_range_and_params() -> None:
    hq = _images(3, 40)[:, :, :, :36]  # non-square, non-contiguous
    out = preset("daefr_small")(hq, torch.Generator().manual_seed(0))
    assert out.lq.shape == hq.shape and out.lq.dtype == torch.float32
    assert is_8bit(out.lq) and float(out.lq.min()) >= 0 and float(out.lq.max()) <= 1
    assert set(out.params) == set(PARAM_KEYS)
    assert all(v.shape[0] == 3 and v.device.type == "cpu" for v in out.params.values())


def test_bfloat16_matches_float32_up_to_bf16_rounding() -> None:
    hq = _images(2)
    module = preset("daefr_small")
    ref = module(hq, torch.Generator().manual_seed(1)).lq
    low = module(hq.bfloat16(), torch.Generator().manual_seed(1)).lq
    assert low.dtype == torch.bfloat16
    # bf16 input is itself rounded, so a few pixels may land on another level; the rest agree
    close = (low.float() - ref).abs() <= 2.0 / 255.0 + 4e-3
    assert close.float().mean() > 0.95


def test_seed_reproducibility_and_global_rng() -> None:
    hq = _images(4)
    module = preset("daefr_large")
    torch.manual_seed(5)
    a = module(hq)
    torch.manual_seed(5)
    b = module(hq)
    assert torch.equal(a.lq, b.lq)
    c = module(hq)
    assert not torch.equal(a.lq, c.lq)


def test_replay_reproduces_and_responds_to_params() -> None:
    hq = _images(4)
    module = preset("gfpgan", color_jitter_prob=1.0)
    out = module(hq, torch.Generator().manual_seed(2))
    again = module.replay(hq.clone(), {k: v.clone() for k, v in out.params.items()})
    assert torch.equal(again.lq, out.lq)
    changed = dict(out.params)
    changed["jpeg_quality"] = torch.full_like(out.params["jpeg_quality"], 10)
    assert not torch.equal(module.replay(hq, changed).lq, out.lq)


@pytest.mark.parametrize("max_group", [2, 100])
def test_batch_samples_match_single_sample_processing(max_group: int) -> None:
    hq = _images(6)
    module = preset("daefr_small", noise_range=(0.0, 0.0))  # noise draws depend on the size groups
    out = module(hq, torch.Generator().manual_seed(3))
    assert torch.equal(apply_degradation(hq, out.params, max_group), out.lq)
    groups = size_groups(out.params["lq_height"], out.params["lq_width"], 4)
    assert sorted(torch.cat(groups).tolist()) == list(range(6))
    for i in range(6):
        single = module.replay(hq[i : i + 1], {k: v[i : i + 1] for k, v in out.params.items()})
        diff = (single.lq[0] - out.lq[i]).abs()
        assert float(diff.max()) <= 1.0 / 255.0 + 1e-6 and float((diff > 0).float().mean()) < 0.01


def test_size_groups_keep_areas_within_a_factor_of_two() -> None:
    h = torch.tensor([512, 20, 300, 64, 640, 17, 500, 510, 505])
    groups = size_groups(h, h, 2)
    assert sorted(torch.cat(groups).tolist()) == list(range(len(h)))
    for g in groups:
        assert 1 <= len(g) <= 2
        area = ((h[g] + 15) // 16 * 16) ** 2
        assert int(area.max()) < 2 * int(area.min())
    assert h[groups[0]].tolist() == [640, 512]  # largest first
    assert len(size_groups(h, h, 100)) < len(groups)


def test_input_is_not_modified_and_any_layout_works() -> None:
    hq = _images(2)
    before = hq.clone()
    module = preset("codeformer")
    a = module(hq, torch.Generator().manual_seed(0)).lq
    assert torch.equal(hq, before)
    b = module(hq.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(0)).lq
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [torch.rand(2, 1, 48, 48), torch.rand(3, 48, 48),
                                 torch.randint(0, 255, (1, 3, 48, 48))])
def test_bad_input_raises(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="degradation expects"):
        preset("daefr_small")(bad)


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="unknown kernel type"):
        Degradation(kernel_list=("gauss",), kernel_prob=(1.0,))
    with pytest.raises(ValueError, match="odd"):
        Degradation(kernel_sizes=(40,))
    with pytest.raises(ValueError, match="jpeg_range"):
        Degradation(jpeg_range=(0, 120))
    with pytest.raises(ValueError, match="low <= high"):
        Degradation(scale_range=(8, 1))
    with pytest.raises(ValueError, match="unknown degradation preset"):
        preset("codeformr")
    with pytest.raises(ConfigError, match="Did you mean 'jpeg_range'"):
        REGISTRY.build("degradations", {"name": "gfpgan", "jpeg_rang": [50, 90]})


def test_replay_rejects_incomplete_params() -> None:
    module = Degradation()
    hq = _images(2)
    params = module(hq).params
    del params["jpeg_quality"]
    with pytest.raises(KeyError, match="jpeg_quality"):
        module.replay(hq, params)


def test_no_jpeg_option() -> None:
    module = Degradation(jpeg_range=None)
    out = module(_images(2), torch.Generator().manual_seed(0))
    assert torch.equal(out.params["jpeg_quality"], torch.zeros(2, dtype=torch.long))
    assert is_8bit(out.lq)


def test_degrade_batch_and_apply_to_batch() -> None:
    hq = _images(2) * 2 - 1
    module = preset("daefr_small")
    lq, params = degrade_batch(module, hq, torch.Generator().manual_seed(0))
    ref = module(hq * 0.5 + 0.5, torch.Generator().manual_seed(0)).lq * 2 - 1
    assert torch.allclose(lq, ref) and float(lq.min()) >= -1 and float(lq.max()) <= 1
    assert params["scale"].shape == (2,)
    batch = apply_to_batch({"hq": hq}, module, torch.Generator().manual_seed(0))
    assert torch.allclose(batch["lq"], lq) and "degradation_params" in batch
    stored = {"hq": hq, "lq": torch.zeros_like(hq)}
    assert apply_to_batch(stored, None)["lq"] is stored["lq"]
    with pytest.raises(KeyError, match="precomputed"):
        apply_to_batch({"hq": hq}, None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_parameters_and_close_output() -> None:
    module = preset("daefr_small")
    check_degradation(module, device="cuda")
    hq = _images(4)
    cpu = module(hq, torch.Generator().manual_seed(0))
    gpu = module.replay(hq.cuda(), cpu.params)
    assert gpu.lq.device.type == "cuda"
    assert all(torch.equal(cpu.params[k], gpu.params[k]) for k in cpu.params)
