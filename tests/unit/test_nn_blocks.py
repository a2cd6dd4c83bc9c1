"""Unit tests of daefr.nn.blocks: shapes, official padding/normalisation, attention maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from daefr.nn.blocks import Downsample, MultiHeadAttnBlock, Normalize, ResnetBlock, Upsample


def _seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_normalize_is_groupnorm_32_eps_1e6() -> None:
    norm = Normalize(64)
    assert norm.num_groups == 32 and norm.eps == 1e-6
    with pytest.raises(ValueError, match="groups"):
        Normalize(48)


def test_resnet_block_shortcut_only_when_channels_change() -> None:
    assert ResnetBlock(32).nin_shortcut is None
    block = ResnetBlock(32, 64)
    assert block.nin_shortcut is not None
    assert block(_seeded(2, 32, 8, 8)).shape == (2, 64, 8, 8)


def test_downsample_pads_right_bottom_only() -> None:
    down = Downsample(32)
    x = _seeded(1, 32, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)
    out = down(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    symmetric = F.conv2d(x, down.conv.weight, down.conv.bias, stride=2, padding=1)
    assert (out - symmetric).abs().max() > 1e-3


def test_upsample_doubles() -> None:
    assert Upsample(32)(_seeded(1, 32, 4, 5)).shape == (1, 32, 8, 10)


def _reference_attention(block: MultiHeadAttnBlock, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Per-head loop in float64, written independently of the block's vectorised path."""
    block = block.double()
    x, kv = x.double(), block.norm1(x.double())
    qs = kv if y is None else block.norm2(y.double())
    b, c, h, w = x.shape
    q, k, v = block.q(qs).flatten(2), block.k(kv).flatten(2), block.v(kv).flatten(2)  # (B, C, HW)
    d = c // block.head_size
    outs = []
    for head in range(block.head_size):
        sl = slice(head * d, (head + 1) * d)
        att = torch.softmax(torch.einsum("bci,bcj->bij", q[:, sl], k[:, sl]) / d**0.5, dim=-1)
        outs.append(torch.einsum("bij,bcj->bci", att, v[:, sl]))
    out = torch.cat(outs, dim=1).reshape(b, c, h, w)
    return x + block.proj_out(out)


@pytest.mark.parametrize("heads", [1, 8])
@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_per_head_reference(heads: int, cross: bool) -> None:
    torch.manual_seed(0)
    block = MultiHeadAttnBlock(64, head_size=heads)
    x, y = _seeded(2, 64, 4, 4, seed=1), _seeded(2, 64, 4, 4, seed=2)
    out = block(x, y if cross else None)
    ref = _reference_attention(block, x, y if cross else None).float()
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


def test_cross_attention_residual_on_kv_input_and_fused_path() -> None:
    torch.manual_seed(0)
    block = MultiHeadAttnBlock(64, head_size=8)
    torch.nn.init.zeros_(block.proj_out.weight)
    torch.nn.init.zeros_(block.proj_out.bias)
    x, y = _seeded(1, 64, 4, 4, seed=1), _seeded(1, 64, 4, 4, seed=2)
    torch.testing.assert_close(block(x, y), x, rtol=0, atol=0)  # residual is x, not y
    torch.manual_seed(1)
    block = MultiHeadAttnBlock(64, head_size=8)
    plain = block(x, y)
    block.fused = True
    torch.testing.assert_close(block(x, y), plain, rtol=0, atol=1e-5)
    assert not MultiHeadAttnBlock(64).fused  # parity path is the default


def test_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="heads"):
        MultiHeadAttnBlock(64, head_size=3)
    block = MultiHeadAttnBlock(64)
    with pytest.raises(ValueError, match="query input"):
        block(_seeded(1, 64, 4, 4), _seeded(1, 64, 2, 2))
