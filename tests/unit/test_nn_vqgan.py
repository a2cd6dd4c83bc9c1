"""Unit tests of the VQGAN encoder/decoder, quantizer, PatchGAN and VQGAN model (tiny, seeded)."""

from __future__ import annotations

import pytest
import torch

from daefr.errors import ConfigError
from daefr.models.presets import build_vqgan
from daefr.models.vqgan import VQGAN
from daefr.nn.contracts import Codebook, ImageDecoder, ImageEncoder
from daefr.nn.patchgan import PatchGANDiscriminator
from daefr.nn.quantizer import VectorQuantizer
from daefr.nn.vqgan import Decoder, Encoder
from daefr.registry import REGISTRY

LAYOUT = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16, attn_resolutions=(8,), z_channels=32)


def test_encoder_decoder_shapes_features_and_contracts() -> None:
    torch.manual_seed(0)
    enc, dec = Encoder(**LAYOUT), Decoder(**LAYOUT)
    assert isinstance(enc, ImageEncoder) and isinstance(dec, ImageDecoder)
    x = torch.rand(2, 3, 16, 24) * 2 - 1  # non-square input: the layout is fully convolutional
    feats = enc.forward_features(x)
    assert list(feats) == ["in", "block_0", "block_1_atten", "mid_atten", "out"]
    assert feats["block_0"].shape == (2, 32, 16, 24) and feats["out"].shape == (2, 32, 8, 12)
    assert torch.equal(enc(x), feats["out"])
    assert dec(feats["out"]).shape == (2, 3, 16, 24)
    assert dec.last_layer is dec.conv_out.weight
    assert len(enc.down[1].attn) == 1 and len(dec.up[1].attn) == 2 and len(enc.down[0].attn) == 0
    no_mid = Encoder(**LAYOUT, enable_mid=False)
    assert no_mid.mid is None and "mid_atten" not in no_mid.forward_features(x)
    with pytest.raises(ValueError, match="not divisible"):
        Encoder(**{**LAYOUT, "resolution": 15})


def test_quantizer_indices_lookup_loss_and_straight_through() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(n_embed=16, embed_dim=8)
    assert isinstance(vq, Codebook)
    z = torch.randn(2, 8, 3, 4, requires_grad=True)
    out = vq(z)
    assert out.indices.shape == (2, 3, 4) and out.indices.dtype == torch.int64
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(flat, vq.codebook.detach()).argmin(dim=1)
    assert torch.equal(out.indices.reshape(-1), brute)
    torch.testing.assert_close(out.quant, vq.lookup(out.indices), rtol=0, atol=1e-6)
    mse = torch.mean((vq.lookup(out.indices) - z) ** 2)
    torch.testing.assert_close(out.loss, 1.25 * mse, rtol=1e-6, atol=0)
    assert out.codes_in_use.item() == out.indices.unique().numel()
    assert 1.0 <= out.perplexity.item() <= out.codes_in_use.item() + 1e-4
    out.quant.sum().backward()  # straight-through: d quant / d z = identity
    assert z.grad is not None and torch.equal(z.grad, torch.ones_like(z))
    with pytest.raises(ValueError, match="expects"):
        vq(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        vq.lookup(torch.zeros(4, dtype=torch.long))


def test_quantizer_and_association_stay_float32_under_autocast() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(n_embed=64, embed_dim=8)
    z = torch.randn(2, 8, 4, 4).bfloat16()
    reference = vq(z.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
        assoc = REGISTRY.build("associations", "patch_clip")(z, z.flip(0))
    assert torch.equal(out.indices, reference.indices) and out.quant.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32 and assoc.logits.dtype == torch.float32
    torch.testing.assert_close(out.loss, reference.loss, rtol=0, atol=0)


def test_patchgan_layout_and_output() -> None:
    disc = PatchGANDiscriminator(ndf=8)
    keys = [k for k in disc.state_dict() if k.endswith("weight")]
    assert keys == ["main.0.weight", "main.2.weight", "main.3.weight", "main.5.weight", "main.6.weight",
                    "main.8.weight", "main.9.weight", "main.11.weight"]
    assert disc(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    assert abs(disc.main[0].weight.std().item() - 0.02) < 0.005  # official N(0, 0.02) init


def test_registry_builds_every_builtin_of_this_area() -> None:
    enc = REGISTRY.build("encoders", {"name": "vqgan", **LAYOUT})
    dec = REGISTRY.build("decoders", {"name": "vqgan", **LAYOUT})
    vq = REGISTRY.build("codebooks", {"name": "vq", "n_embed": 32, "embed_dim": 16})
    assert isinstance(enc, Encoder) and isinstance(dec, Decoder) and isinstance(vq, VectorQuantizer)
    assert isinstance(REGISTRY.build("discriminators", {"name": "patchgan", "ndf": 8}), PatchGANDiscriminator)
    assert REGISTRY.build("associations", {"name": "patch_clip", "temperature": 0.1}).temperature == pytest.approx(0.1)
    model = VQGAN(encoder={"name": "vqgan", **LAYOUT}, decoder=dec, codebook=vq)
    assert model.quant_conv.out_channels == 16 and model.post_quant_conv.out_channels == 32


def test_vqgan_model_round_trip_and_gradients() -> None:
    torch.manual_seed(0)
    model = VQGAN(Encoder(**LAYOUT), Decoder(**LAYOUT), VectorQuantizer(32, 16))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon, loss, info = model(x)
    assert recon.shape == x.shape and loss.ndim == 0 and info.indices.shape == (2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.decode_indices(info.indices), recon, rtol=0, atol=1e-5)
    (recon.abs().mean() + loss).backward()
    assert model.encoder.conv_in.weight.grad is not None  # straight-through reaches the encoder
    assert model.last_layer.grad is not None and model.quantize.codebook.grad is not None
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_vqgan("huge")
