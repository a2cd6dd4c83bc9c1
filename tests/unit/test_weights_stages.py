"""Every stage's ``init_*_from`` takes short names and hf:// URIs (a temporary Hub cache, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daefr.errors import WeightsNotFoundError
from daefr.stages import AssociationStage, CodebookStage, RestorationStage
from daefr.testing.hub_cache import DAEFR_REPO, isolated_hub_env, tiny_vqgan_state, write_tiny_daefr_release

ENC = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16, "attn_resolutions": [],
       "z_channels": 16, "enable_mid": True, "head_size": 1}
CODEBOOK = {"name": "vq", "n_embed": 16, "embed_dim": 32}
LOSS = {"name": "vqgan", "disc_start": 0, "perceptual_weight": 0,
        "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}
ARCH = {**{k: v for k, v in ENC.items() if k != "name"}, "dropout": 0.0, "embed_dim": 32, "n_embed": 16,
        "fusion_heads": 2, "n_layers": 1, "n_head": 2, "dim_mlp": 16, "transformer_dim": 16}


@pytest.fixture
def release(tmp_path, monkeypatch) -> dict[str, Path]:
    torch.set_num_threads(1)
    env = isolated_hub_env(monkeypatch, tmp_path)
    return write_tiny_daefr_release(env["hub"], final_arch=ARCH)


def _same(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_codebook_stage_init_from_a_name_and_a_uri(release) -> None:
    stage = CodebookStage(encoder=ENC, decoder=ENC, codebook=CODEBOOK, loss=LOSS, init_from="daefr-hq-codebook",
                          scale_lr=False)
    assert _same(stage.vqgan, tiny_vqgan_state(1))
    lq = CodebookStage(encoder=ENC, decoder=ENC, codebook=CODEBOOK, loss=LOSS, target="lq", scale_lr=False,
                       init_from=f"hf://{DAEFR_REPO}/LQ_codebook.ckpt@main")
    assert _same(lq.vqgan, tiny_vqgan_state(2))


def test_association_stage_init_from_names(release) -> None:
    stage = AssociationStage(encoder=ENC, decoder=ENC, codebook=CODEBOOK, loss=LOSS, scale_lr=False,
                             init_hq_from="daefr-hq-codebook", init_lq_from="daefr-lq-codebook")
    assert _same(stage.hq, tiny_vqgan_state(1)) and _same(stage.lq, tiny_vqgan_state(2))


def test_restoration_stage_init_from_names(release) -> None:
    stage = RestorationStage(arch=ARCH, init_hq_codebook_from="daefr-hq-codebook",
                             init_association_from="daefr-association", scale_lr=False)
    hq, a_lq = tiny_vqgan_state(1), tiny_vqgan_state(4)
    assert torch.equal(stage.net.restorer.codebook.embedding.weight, hq["quantize.embedding.weight"])
    assert torch.equal(stage.net.restorer.lq_encoder.conv_in.weight, a_lq["encoder.conv_in.weight"])
    final = RestorationStage(arch=ARCH, init_from="daefr", scale_lr=False)
    from daefr.stages.init_weights import read_state_dict

    official = read_state_dict(release["DAEFR_model.ckpt"])
    assert torch.equal(final.net.restorer.predictor.position_emb, official["position_emb"])


def test_a_missing_name_offline_stops_the_stage_in_one_line(release, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    uri = "hf://someone/faces/assoc.ckpt"
    with pytest.raises(WeightsNotFoundError, match=rf"^checkpoint to initialise from: '{uri}'.*HF_HUB_OFFLINE.*"
                                                   rf"daefr weights download {uri}"):
        RestorationStage(arch=ARCH, init_hq_codebook_from="daefr-hq-codebook", init_association_from=uri,
                         scale_lr=False)
