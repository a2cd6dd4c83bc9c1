"""Final-stage key mapping (shapes only, meta device), restorer files, ``daefr convert``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import Tensor

import daefr
from daefr.cli import main
from daefr.errors import CheckpointError, ConfigError, WeightsNotFoundError
from daefr.interop import infer_official_arch, restorer_from_official, save_restorer
from daefr.interop.keymap import shapes_of
from daefr.interop.keymap_daefr import DAEFR_FINAL_KEYMAP, to_official_state_dict
from daefr.models.daefr_net import DAEFRNet
from daefr.models.restorer import RESTORER_PRESETS, DAEFRRestorer
from daefr.nn.contracts import CodePredictor, Fusion
from daefr.registry import REGISTRY
from daefr.testing.daefr_tiny import random_official_state_dict
from daefr.testing.networks import check_fusion, check_predictor
from daefr.testing.parity import single_thread

TRAINING_ONLY = ("vqvae.Fixed_encoder.", "vqvae.Fixed_quant_conv.", "vqvae.HQ_quantize.", "vqvae.LQ_quantize.")
# A very small architecture (32 px -> 16x16 latent) so file round trips stay fast; head counts are the
# official ones because shapes cannot show them (loading without an architecture must find the rest).
MICRO = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32, "attn_resolutions": [16],
         "z_channels": 64, "embed_dim": 64, "n_embed": 64, "n_layers": 2, "dim_mlp": 128, "transformer_dim": 64}



@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # the fixtures' condition; also avoids thread thrashing on the shared 2-core test machine
    with single_thread():
        yield

@pytest.fixture(scope="module")
def official_shapes(parity_dir: Path) -> dict[str, tuple[int, ...]]:
    keys = json.loads((parity_dir / "official_keys.json").read_text())["models"]["DAEFR"]["keys"]
    assert len(keys) == 877
    return {k: tuple(v[0]) for k, v in keys.items()}


@pytest.fixture(scope="module")
def full_net() -> DAEFRNet:
    with torch.device("meta"):
        return DAEFRNet.from_config("full")


def test_every_official_key_maps_to_a_parameter_of_the_same_shape(official_shapes, full_net) -> None:
    target = {k: tuple(v.shape) for k, v in full_net.state_dict().items()}
    report = DAEFR_FINAL_KEYMAP.report(official_shapes, target)
    assert report.ok, report.summary()
    assert len(report.mapped) == 877 == len(target) and not report.ignored and not report.name_only
    assert sorted(report.mapped.values()) == sorted(target)  # one-to-one


def test_every_inference_parameter_has_a_source_key(official_shapes, full_net) -> None:
    restorer = full_net.restorer
    target = {f"restorer.{k}": s for k, s in shapes_of(restorer).items()}
    report = DAEFR_FINAL_KEYMAP.report(official_shapes, target)
    assert not report.missing and not report.shape_mismatches
    leftovers = set(report.unmatched)  # keys of parts a restorer does not hold: exactly the training-only ones
    assert leftovers == {k for k in official_shapes if k.startswith(TRAINING_ONLY)} and len(leftovers) == 174
    assert len(report.mapped) == 703 == len(target)


def test_inverse_mapping_gives_the_official_manifest(official_shapes, full_net) -> None:
    assert shapes_of(to_official_state_dict(full_net)) == official_shapes


def test_architecture_is_read_off_the_official_shapes(official_shapes) -> None:
    meta = {k: torch.empty(s, device="meta") for k, s in official_shapes.items()}
    inferred = infer_official_arch(meta)
    assert all(RESTORER_PRESETS["full"][k] == v for k, v in inferred.items())
    assert inferred["resolution"] == 512 and inferred["ch_mult"] == [1, 2, 2, 4, 4, 8]


@pytest.fixture(scope="module")
def official_sd() -> dict[str, Tensor]:
    return random_official_state_dict(MICRO, seed=3)


@pytest.fixture(scope="module")
def restorer(official_sd: dict[str, Tensor]) -> DAEFRRestorer:
    return restorer_from_official(official_sd)


@pytest.fixture(scope="module")
def lq() -> Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1


@pytest.fixture(scope="module")
def expected(restorer: DAEFRRestorer, lq: Tensor) -> Tensor:
    with torch.no_grad():
        return restorer(lq)


def test_save_then_load_restorer_gives_identical_outputs(tmp_path, restorer, lq, expected) -> None:
    path = save_restorer(restorer, tmp_path / "r.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "daefr.restorer" and json.loads(meta["arch"]) == restorer.arch
    loaded = daefr.load_restorer(path)
    assert not loaded.training and loaded.arch == restorer.arch
    with torch.no_grad():
        assert torch.equal(loaded(lq), expected)
    fast = daefr.load_restorer(path, fast=True)
    assert fast.fast and fast.predictor.fused  # type: ignore[union-attr]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_official_checkpoint_file_loads_like_the_state_dict(tmp_path, official_sd, lq, expected) -> None:
    ckpt = tmp_path / "DAEFR_model.ckpt"
    torch.save({"epoch": 3, "global_step": 9, "state_dict": official_sd}, ckpt)
    with torch.no_grad():
        assert torch.equal(daefr.load_restorer(ckpt)(lq), expected)


def test_strict_loading_names_missing_and_unexpected_keys(official_sd) -> None:
    broken = dict(official_sd)
    del broken["ft_layers.1.linear1.weight"]
    with pytest.raises(CheckpointError, match="missing.*ft_layers.1.linear1"):
        restorer_from_official(broken, **MICRO)
    extra = {**official_sd, "vqvae.something_new.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="unexpected.*something_new"):
        restorer_from_official(extra, **MICRO)
    with pytest.raises(CheckpointError, match="shape"):
        restorer_from_official(official_sd, preset="tiny")  # forcing another architecture cannot match


def test_load_restorer_errors(tmp_path, parity_dir) -> None:
    with pytest.raises(WeightsNotFoundError, match="DAEFR_model.ckpt"):
        daefr.load_restorer(tmp_path / "absent.ckpt")
    with pytest.raises(CheckpointError, match="codebook-stage"):
        daefr.load_restorer(parity_dir / "vqgan_tiny_pl108.ckpt")


def test_convert_cli(tmp_path, official_sd, lq, expected, capsys) -> None:
    src, out = tmp_path / "DAEFR_model.ckpt", tmp_path / "out.safetensors"
    torch.save({"state_dict": official_sd}, src)
    assert main(["convert", str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "daefr checkpoint" in text and "missing 0, unexpected 0" in text and "not exported 70" in text
    with torch.no_grad():
        assert torch.equal(daefr.load_restorer(out)(lq), expected)
    before = out.read_bytes()
    assert main(["convert", str(src), str(out)]) == 1  # refuses to overwrite
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["convert", str(src), str(out), "--force", "--arch", json.dumps(MICRO)]) == 0
    assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--kind", "codebook"]) == 1
    assert "is a daefr checkpoint" in capsys.readouterr().err


def test_convert_codebook_checkpoint(tmp_path, parity_dir, capsys) -> None:
    arch = '{"ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "resolution": 64, "z_channels": 64, ' \
           '"embed_dim": 64, "n_embed": 128, "disc_ndf": 8}'
    out = tmp_path / "hq.safetensors"
    assert main(["convert", str(parity_dir / "vqgan_tiny_pl108.ckpt"), str(out), "--arch", arch]) == 0
    assert "215 tensors" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["kind"] == "codebook" and "vqgan.quantize.embedding.weight" in handle.keys()
        stored = json.loads(handle.metadata()["arch"])
    # the same architecture is read off the shapes when --arch is left out
    assert main(["convert", str(parity_dir / "vqgan_tiny_pl108.ckpt"), str(tmp_path / "auto.safetensors")]) == 0
    with safe_open(str(tmp_path / "auto.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["arch"]) == stored
    assert stored["discriminator"]["ndf"] == 8 and stored["vqgan"]["z_channels"] == 64


def test_components_are_registered_and_follow_their_contracts() -> None:
    fusion = REGISTRY.build("fusions", "cross_attention", channels=64, head_size=8)
    predictor = REGISTRY.build("predictors", {"name": "transformer", "n_layers": 1}, in_channels=64, n_embed=16,
                               n_tokens=4, embed_dim=32, n_head=4, dim_mlp=64)
    assert isinstance(fusion, Fusion) and isinstance(predictor, CodePredictor)
    check_fusion(fusion, channels=64)
    check_predictor(predictor)
    feat = torch.randn(2, 64, 2, 2)
    fused = fusion(feat, torch.randn(2, 64, 2, 2))
    assert fused.shape == feat.shape and predictor(fused).shape == (2, 4, 16)
    with pytest.raises(ValueError, match="position embedding covers 4"):
        predictor(torch.randn(1, 64, 3, 3))


def test_latent_grid_follows_the_configured_resolution() -> None:
    small = DAEFRRestorer.from_config(MICRO, resolution=16).eval()  # 16 px -> 8x8 latent, not 16x16
    assert small.n_tokens == 64 and small.input_size == 16 and small.predictor.position_emb.shape == (64, 64)
    with torch.no_grad():
        details = small(torch.zeros(1, 3, 16, 16), return_details=True)
    assert details["logits"].shape == (1, 64, 64) and details["restored"].shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="16x16"):
        small(torch.zeros(1, 3, 32, 32))


def test_restorer_assembled_from_modules_refuses_to_save_without_arch(tmp_path, restorer) -> None:
    bare = DAEFRRestorer(restorer.lq_encoder, restorer.hq_encoder, restorer.fusion, restorer.predictor,
                         restorer.codebook, restorer.decoder)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="from_config"):
        save_restorer(bare, tmp_path / "x.safetensors")


def test_full_size_restorer_attributes(full_net) -> None:
    """The released architecture, shapes only (a full-size model never runs in tests; a meta-device
    forward would cost seconds of torch's Python reference kernels, so the graph runs on MICRO instead)."""
    restorer = full_net.restorer
    assert restorer.input_size == 512 and restorer.n_tokens == 256 and restorer.n_embed == 1024
    assert restorer.downsample_factor == 32 and restorer.predictor.position_emb.shape == (256, 512)
    assert sum(1 for _ in full_net.trainable_parameters()) == 470  # the official optimizer's one group
    with pytest.raises(ValueError, match="512x512"):
        restorer.check_input(torch.empty(1, 3, 256, 256, device="meta"))


def test_architecture_config_file_is_the_default(repo_root) -> None:
    from daefr.interop.convert import parse_arch

    assert parse_arch(str(repo_root / "configs/daefr/architecture_full.yaml")) == RESTORER_PRESETS["full"]


def test_convert_association_checkpoint(tmp_path, parity_dir, capsys) -> None:
    meta = json.loads((parity_dir / "association_tiny.json").read_text())
    state = {k: torch.zeros(v[0]) for k, v in meta["state_dict"].items()}  # shapes are what convert checks
    src, out = tmp_path / "Association_stage.ckpt", tmp_path / "assoc.safetensors"
    torch.save({"state_dict": state}, src)
    dd = meta["model"]["ddconfig_params (both branches)"]
    arch = json.dumps({k: dd[k] for k in ("ch", "ch_mult", "num_res_blocks", "resolution", "attn_resolutions",
                                          "z_channels", "embed_dim", "n_embed")})
    assert main(["convert", str(src), str(out), "--arch", arch]) == 0
    assert f"({len(state)} tensors)" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as handle:
        keys = set(handle.keys())
        assert handle.metadata()["kind"] == "association"
    assert {"association.logit_scale", "lq.quantize.embedding.weight", "hq_discriminator.main.0.weight"} <= keys
    # without --arch the layout is read off the shapes and gives the same file
    assert main(["convert", str(src), str(tmp_path / "b.safetensors")]) == 0
    with safe_open(str(tmp_path / "b.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == keys and json.loads(handle.metadata()["arch"])["vqgan"]["ch_mult"] == [1, 2, 2]
    assert main(["convert", str(src), str(tmp_path / "c.safetensors"), "--arch", "full"]) == 1
    assert "pass --arch" in capsys.readouterr().err


def test_architecture_keywords_override_what_the_shapes_say(official_sd, restorer, lq) -> None:
    # head counts are invisible in shapes: a keyword sets them, the rest still comes from the shapes
    four_heads = restorer_from_official(official_sd, n_head=4)
    assert four_heads.arch["n_head"] == 4 and four_heads.arch["ch_mult"] == [1, 2]
    with torch.no_grad():
        ours, default = four_heads(lq, return_details=True), restorer(lq, return_details=True)
    assert torch.equal(ours["fused"], default["fused"])  # same weights up to the transformer
    assert (ours["logits"] - default["logits"]).abs().max() > 1e-3  # 4 heads of 16 vs 8 heads of 8
