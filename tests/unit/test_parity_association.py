"""Parity of the association stage (two VQGANs + patch CLIP loss) with ``association_tiny``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from daefr.interop.keymap import ASSOCIATION_STAGE_KEYMAP, load_official
from daefr.losses.association import PatchCLIPLoss, clip_loss_with_negatives, patch_tokens
from daefr.models.presets import build_vqgan
from daefr.models.vqgan import VQGAN
from daefr.registry import REGISTRY
from daefr.testing.parity import fixture_meta, fixture_tensors, recipe_weights, single_thread

ATOL = 5e-5


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ref(parity_dir: Path) -> dict[str, torch.Tensor]:
    return fixture_tensors(parity_dir, "association_tiny")


@pytest.fixture(scope="module")
def stage(parity_dir: Path) -> tuple[VQGAN, VQGAN, PatchCLIPLoss]:
    meta: dict[str, Any] = fixture_meta(parity_dir, "association_tiny")
    dd = dict(meta["model"]["ddconfig_params (both branches)"])
    for unused in ("in_channels", "out_ch", "fix_decoder", "fix_codebook"):
        dd.pop(unused)
    hq, lq = build_vqgan(dd).eval(), build_vqgan(dd).eval()
    assoc = REGISTRY.build("associations", "patch_clip")
    weights = recipe_weights(
        parity_dir, meta["state_dict"],
        salt=lambda k: "assoc-lq-v2" if k.startswith(("vqvae_LQ.", "loss_LQ.")) else "assoc-hq-v2",
        keep=lambda k: k.startswith(("vqvae.", "vqvae_LQ.")) or k == "logit_scale",
    )
    report = load_official(ASSOCIATION_STAGE_KEYMAP, weights, {"hq": hq, "lq": lq, "association": assoc})
    assert report.ok and len(report.mapped) == 2 * 193 + 1
    return hq, lq, assoc


def test_association_tiny_reproduces_every_tensor(stage: tuple[VQGAN, VQGAN, PatchCLIPLoss],
                                                  ref: dict[str, torch.Tensor]) -> None:
    hq, lq, assoc = stage
    with torch.no_grad():
        hq_h, lq_h = hq.encode_pre_quant(ref["gt"]), lq.encode_pre_quant(ref["lq"])
        out = assoc(hq_h, lq_h)
        hq_q, lq_q = hq.quantize(hq_h), lq.quantize(lq_h)
        ours = {
            "HQ_h": hq_h, "LQ_h": lq_h, "logits": out.logits, "HQ_loss": out.hq_loss,
            "LQ_loss": out.lq_loss, "clip_loss": out.loss, "logit_scale_exp": assoc.logit_scale.exp(),
            "HQ_emb_loss": hq_q.loss, "LQ_emb_loss": lq_q.loss,
            "HQ_dec": hq.decode(hq_q.quant), "LQ_dec": lq.decode(lq_q.quant),
        }
    for name, value in ours.items():
        torch.testing.assert_close(value, ref[name], rtol=0, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.equal(hq_q.indices.reshape(-1, 1), ref["HQ_idx"])
    assert torch.equal(lq_q.indices.reshape(-1, 1), ref["LQ_idx"])
    assert assoc.temperature == pytest.approx(0.07)


def test_logits_from_stored_features_are_bit_exact(stage: tuple[VQGAN, VQGAN, PatchCLIPLoss],
                                                   ref: dict[str, torch.Tensor]) -> None:
    out = stage[2](ref["HQ_h"], ref["LQ_h"])
    assert torch.equal(out.logits, ref["logits"])
    assert torch.equal(out.loss, ref["clip_loss"])
    scaled_after = ref["logit_scale_exp"] * (patch_tokens(ref["HQ_h"]) @ patch_tokens(ref["LQ_h"]).t())
    assert not torch.equal(scaled_after, ref["logits"])  # the evaluation order is visible at this precision


def test_gathered_negatives_average_to_the_full_batch_loss() -> None:
    g = torch.Generator().manual_seed(3)
    hq, lq = torch.randn(4, 8, 2, 2, generator=g), torch.randn(4, 8, 2, 2, generator=g)
    loss = PatchCLIPLoss(temperature=0.1)
    full = loss(hq, lq).loss
    hq_all, lq_all = patch_tokens(hq), patch_tokens(lq)
    per_rank = []
    for rank in range(2):  # simulate two ranks of two images each
        sl = slice(2 * rank, 2 * rank + 2)
        local = clip_loss_with_negatives(patch_tokens(hq[sl]), patch_tokens(lq[sl]), hq_all, lq_all,
                                         offset=8 * rank, scale=loss.logit_scale.exp())
        per_rank.append(local.loss)
    torch.testing.assert_close(torch.stack(per_rank).mean(), full, rtol=0, atol=1e-6)
    assert not torch.allclose(per_rank[0], per_rank[1])
    with pytest.raises(ValueError, match="differ"):
        loss(hq, lq[:2])
    with pytest.raises(ValueError, match="temperature"):
        PatchCLIPLoss(temperature=0.0)
