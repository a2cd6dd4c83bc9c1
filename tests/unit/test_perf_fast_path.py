"""Fast inference path vs the parity path (tiny configs): same function within the stated tolerances."""

from __future__ import annotations

import copy

import pytest
import torch

from daefr.errors import ConfigError
from daefr.models.inference_options import (
    InferenceModel,
    InferenceOptions,
    cpu_supports,
    optimize_for_inference,
)
from daefr.models.restorer import DAEFRRestorer
from daefr.nn.blocks import ResnetBlock, Upsample
from daefr.nn.fast_blocks import FastResnetBlock, SubpixelUpsample, fuse_vqgan_blocks

#: The issue's tolerances: max |diff| on [-1, 1] outputs and the share of identical codes.
MAX_ABS = 1e-3
CODE_AGREEMENT = 0.99


#: The ``tiny`` preset made smaller still (32 px, 2 narrow transformer layers) to keep the tests quick.
SMALL = {"resolution": 32, "z_channels": 64, "embed_dim": 64, "n_embed": 128, "n_layers": 2, "transformer_dim": 64,
         "dim_mlp": 128}


def _seeded(arch: str, **overrides: object) -> DAEFRRestorer:
    torch.manual_seed(0)
    restorer = DAEFRRestorer.from_config(arch, **overrides).eval()
    with torch.no_grad():  # give the zero-initialised position embedding values
        restorer.predictor.position_emb.normal_(std=0.02)  # type: ignore[union-attr,operator]
    return restorer


@pytest.fixture(scope="module")
def tiny_restorer() -> DAEFRRestorer:
    """The ``tiny`` preset reduced by :data:`SMALL`, seeded random weights."""
    return _seeded("tiny", **SMALL)


@pytest.fixture(scope="module")
def lq() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_fast_path_matches_parity_on_tiny_preset() -> None:
    """The unmodified ``tiny`` preset (daefr_tiny layout, official 9-layer transformer, 1024 codes)."""
    restorer = _seeded("tiny")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        ref = restorer(x, return_details=True)
    # NCHW here; the small model below checks channels-last
    restored, codes = optimize_for_inference(restorer, channels_last=False).forward_with_codes(x)
    assert (codes == ref["indices"]).float().mean().item() >= CODE_AGREEMENT
    assert (restored - ref["restored"]).abs().max().item() < MAX_ABS


@pytest.fixture(scope="module")
def parity_out(tiny_restorer: DAEFRRestorer, lq: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return dict(tiny_restorer(lq, return_details=True))


@pytest.mark.parametrize("channels_last", [True])
def test_fast_path_matches_parity(tiny_restorer: DAEFRRestorer, lq: torch.Tensor,
                                  parity_out: dict[str, torch.Tensor], channels_last: bool) -> None:
    model = optimize_for_inference(copy.deepcopy(tiny_restorer), channels_last=channels_last)
    restored, codes = model.forward_with_codes(lq)
    assert restored.shape == lq.shape and restored.dtype == torch.float32
    assert restored.is_contiguous()
    agreement = (codes == parity_out["indices"]).float().mean().item()
    assert agreement >= CODE_AGREEMENT
    assert (restored - parity_out["restored"]).abs().max().item() < MAX_ABS
    assert torch.equal(model(lq), restored)  # forward and forward_with_codes agree


def test_parity_options_are_bit_exact(tiny_restorer: DAEFRRestorer, lq: torch.Tensor,
                                      parity_out: dict[str, torch.Tensor]) -> None:
    model = optimize_for_inference(copy.deepcopy(tiny_restorer), InferenceOptions.parity())
    restored, codes = model.forward_with_codes(lq)
    assert torch.equal(restored, parity_out["restored"])
    assert torch.equal(codes, parity_out["indices"])


def test_optimize_converts_in_place_and_keeps_keys(tiny_restorer: DAEFRRestorer) -> None:
    restorer = copy.deepcopy(tiny_restorer)
    keys = set(restorer.state_dict())
    model = optimize_for_inference(restorer)
    assert isinstance(model, InferenceModel) and model.restorer is restorer
    assert set(restorer.state_dict()) == keys  # same weights file layout after conversion
    assert set(model.state_dict()) == {f"restorer.{k}" for k in keys}  # registered once
    assert not any(isinstance(m, (ResnetBlock, Upsample)) for m in restorer.modules())
    assert restorer.fast and model.input_size == 32
    assert restorer.lq_encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_fuse_blocks_share_parameters_and_count() -> None:
    block = torch.nn.Sequential(ResnetBlock(32, 64), Upsample(64), ResnetBlock(64, 64))
    weight = block[1].conv.weight
    assert fuse_vqgan_blocks(block) == {"resnet_blocks": 2, "upsamples": 1}
    assert isinstance(block[0], FastResnetBlock) and isinstance(block[1], SubpixelUpsample)
    assert block[1].conv.weight is weight
    assert fuse_vqgan_blocks(block) == {"resnet_blocks": 0, "upsamples": 0}  # idempotent


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 32, 8, 8), (1, 32, 5, 7)])
def test_subpixel_upsample_equals_nearest_conv(shape: tuple[int, int, int, int], channels_last: bool) -> None:
    torch.manual_seed(2)
    up = Upsample(shape[1])
    x = torch.randn(shape)
    with torch.no_grad():
        ref = up(x)
        if channels_last:  # the one-pass interleave into channels-last memory
            up.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            x = x.contiguous(memory_format=torch.channels_last)
        out = SubpixelUpsample(up)(x)
    assert out.shape == ref.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert (out - ref).abs().max().item() < 1e-5


def test_fast_resnet_block_equals_parity_block() -> None:
    torch.manual_seed(3)
    block = ResnetBlock(32, 64).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        assert (FastResnetBlock(block)(x) - block(x)).abs().max().item() < 1e-5


def test_bf16_option_runs_and_keeps_float32_output(tiny_restorer: DAEFRRestorer, lq: torch.Tensor,
                                                   parity_out: dict[str, torch.Tensor]) -> None:
    with pytest.warns(RuntimeWarning) if not cpu_supports("bf16") else _no_warning():
        model = optimize_for_inference(copy.deepcopy(tiny_restorer), precision="bf16")
    restored, codes = model.forward_with_codes(lq)
    assert restored.dtype == torch.float32 and torch.isfinite(restored).all()
    assert codes.dtype == torch.int64 and codes.shape == parity_out["indices"].shape
    # reduced precision is an option with a measured deviation, not a parity path; it stays close
    assert (restored - parity_out["restored"]).abs().mean().item() < 0.1


def test_input_checks_and_options_validation(tiny_restorer: DAEFRRestorer) -> None:
    model = optimize_for_inference(copy.deepcopy(tiny_restorer))
    with pytest.raises(ValueError, match="32x32"):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ConfigError, match="precision"):
        InferenceOptions(precision="int8")
    assert InferenceOptions().replace(channels_last=False).channels_last is False


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def test_set_fast_is_the_one_reversible_switch(tiny_restorer: DAEFRRestorer, lq: torch.Tensor,
                                               parity_out: dict[str, torch.Tensor]) -> None:
    restorer = copy.deepcopy(tiny_restorer)
    keys = set(restorer.state_dict())
    restorer.set_fast(True)
    assert any(isinstance(m, FastResnetBlock) for m in restorer.modules())
    assert restorer.decoder.fast and restorer.lq_encoder.fast  # type: ignore[union-attr]
    assert set(restorer.state_dict()) == keys
    with torch.no_grad():
        fast = restorer(lq)
    assert 0 < (fast - parity_out["restored"]).abs().max().item() < MAX_ABS
    restorer.set_fast(False)
    assert not any(isinstance(m, FastResnetBlock | SubpixelUpsample) for m in restorer.modules())
    with torch.no_grad():
        assert torch.equal(restorer(lq), parity_out["restored"])  # back on the official numerics exactly
