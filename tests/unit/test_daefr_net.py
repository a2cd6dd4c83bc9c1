"""Training-side DAEFR network: gradients reach exactly the trained parts; initialisation from stages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from daefr.models.daefr_net import DAEFRNet
from daefr.models.presets import build_vqgan
from daefr.testing.parity import single_thread

MICRO = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32, "attn_resolutions": [16],
         "z_channels": 64, "embed_dim": 64, "n_embed": 64, "n_layers": 2, "dim_mlp": 128, "transformer_dim": 64}
VQGAN_KEYS = ("ch", "ch_mult", "num_res_blocks", "resolution", "attn_resolutions", "z_channels", "embed_dim", "n_embed")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


def test_loss_trains_only_the_official_groups(images) -> None:
    torch.manual_seed(0)
    net = DAEFRNet.from_config(MICRO).train()
    lq, gt = images
    out = net(lq, gt, decode=False)
    assert "restored" not in out and out["gt_idx"].shape == (2, 256) and out["quant_gt"].shape == (2, 64, 16, 16)
    assert torch.allclose(out["loss"], out["ce_loss"] + 10 * out["l2_loss"])
    assert torch.allclose(out["ce_loss"], F.cross_entropy(out["logits"].reshape(-1, 64), out["gt_idx"].reshape(-1)))
    assert torch.allclose(out["l2_loss"], F.mse_loss(out["fused"], out["quant_gt"]))
    out["loss"].backward()
    trained = {id(p) for p in net.trainable_parameters()}
    unused = []
    for name, p in net.named_parameters():
        if id(p) in trained:
            assert p.requires_grad, name
            if p.grad is None:
                unused.append(name)
        else:
            assert not p.requires_grad and p.grad is None, name
    # only the query norm of self-attention blocks gets no gradient (it exists, unused, in the official model)
    assert unused and all(".attn" in n and ".norm2." in n and "fusion" not in n for n in unused), unused
    assert not net.restorer.decoder.training and not net.target_encoder.training and net.restorer.fusion.training


def test_targets_follow_the_frozen_branch(images) -> None:
    torch.manual_seed(1)
    net = DAEFRNet.from_config(MICRO).eval()
    lq, gt = images
    with torch.no_grad():
        gt_idx, quant_gt = net.compute_targets(gt)
        z = net.target_quant_conv(net.target_encoder(gt))
        # nearest code by brute force
        flat = z.permute(0, 2, 3, 1).reshape(-1, 64)
        expected = torch.cdist(flat, net.restorer.codebook.codebook).argmin(dim=1).reshape(2, -1)
        no_gt = net(lq)
    assert torch.equal(gt_idx, expected)
    assert torch.allclose(quant_gt, net.restorer.codebook.lookup(gt_idx.reshape(2, 16, 16)), atol=1e-6)
    assert torch.equal(no_gt["gt_idx"], no_gt["lq_codes"])  # official forward(lq): targets from lq_feat


def test_init_from_stages_copies_as_the_official_rules() -> None:
    torch.manual_seed(2)
    vq = {k: MICRO[k] for k in VQGAN_KEYS}
    hq, assoc_hq, assoc_lq = build_vqgan(vq), build_vqgan(vq), build_vqgan(vq)
    net = DAEFRNet.from_config(MICRO)
    predictor_before = {k: v.clone() for k, v in net.restorer.predictor.state_dict().items()}
    net.init_from_stages(hq, assoc_hq, assoc_lq)
    r = net.restorer
    checks = [(r.lq_encoder, assoc_lq.encoder), (r.hq_encoder, assoc_hq.encoder), (net.target_encoder, hq.encoder),
              (r.hq_quant_conv, assoc_hq.quant_conv), (r.lq_quant_conv, assoc_lq.quant_conv),
              (net.target_quant_conv, hq.quant_conv), (r.codebook, hq.quantize), (r.decoder, hq.decoder),
              (r.post_quant_conv, hq.post_quant_conv), (net.assoc_hq_codebook, assoc_hq.quantize),
              (net.assoc_lq_codebook, assoc_lq.quantize)]
    for ours, theirs in checks:
        for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), k
            assert a.data_ptr() != b.data_ptr()  # copied, not shared
    assert all(torch.equal(v, net.restorer.predictor.state_dict()[k]) for k, v in predictor_before.items())
