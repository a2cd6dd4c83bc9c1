"""The table of named architectures: names, aliases, frozen records and the models built from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from daefr.errors import ConfigError
from daefr.models.architectures import (
    ALIASES,
    ARCHITECTURES,
    architecture_names,
    drop_official_flags,
    get_architecture,
)
from daefr.models.presets import DISCRIMINATOR_PRESETS, VQGAN_PRESETS, build_vqgan
from daefr.models.restorer import RESTORER_PRESETS, DAEFRRestorer, restorer_arch


def test_names_and_aliases_resolve_to_one_record() -> None:
    assert architecture_names() == ["release", "parity", "parity_codebook", "demo", "smoke"]
    assert get_architecture("full") is get_architecture("official") is ARCHITECTURES["release"]
    assert get_architecture("tiny") is get_architecture("daefr_tiny") is ARCHITECTURES["parity"]
    assert set(ALIASES.values()) <= set(ARCHITECTURES)
    with pytest.raises(ConfigError, match="unknown architecture 'huge'.*release, parity"):
        get_architecture("huge")


def test_records_and_views_cannot_be_changed_by_callers() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ARCHITECTURES["release"].ch = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        ARCHITECTURES["demo"] = ARCHITECTURES["release"]  # type: ignore[index]
    first = RESTORER_PRESETS["full"]
    first["ch_mult"].append(99)
    assert RESTORER_PRESETS["full"]["ch_mult"] == [1, 2, 2, 4, 4, 8]  # a fresh dict per lookup
    assert "huge" not in VQGAN_PRESETS and "official" in VQGAN_PRESETS
    assert DISCRIMINATOR_PRESETS["parity_codebook"] == {"in_channels": 3, "ndf": 8, "n_layers": 3}


@pytest.mark.parametrize("name", ["parity", "demo", "smoke"])
def test_each_small_architecture_builds_a_restorer_of_its_size(name: str) -> None:
    arch = get_architecture(name)
    torch.manual_seed(0)
    restorer = DAEFRRestorer.from_config(name).eval()
    assert restorer.input_size == arch.input_size and restorer.n_embed == arch.n_embed
    assert restorer.arch == restorer_arch(name) == arch.restorer_config()
    with torch.no_grad():
        out = restorer(torch.zeros(1, 3, arch.resolution, arch.resolution))
    assert out.shape == (1, 3, arch.resolution, arch.resolution)


def test_release_matches_the_released_shapes_on_the_meta_device() -> None:
    with torch.device("meta"):
        restorer = DAEFRRestorer.from_config("release")
        vqgan = build_vqgan("release")
    assert restorer.input_size == 512 and restorer.grid == 16
    assert vqgan.quantize.embed_dim == 256 and vqgan.encoder.downsample_factor == 32  # type: ignore[union-attr]


def test_official_training_flags_are_handled_in_one_place() -> None:
    cfg = {"ch": 32, "fix_decoder": True, "fix_codebook": False, "fix_encoder": True, "double_z": False}
    assert drop_official_flags(cfg) == {"ch": 32}
    with pytest.raises(ConfigError, match="double_z"):
        drop_official_flags({"double_z": True})
    # both builders accept an official ddconfig as is
    official = {**VQGAN_PRESETS["parity_codebook"], "double_z": False, "fix_decoder": True}
    assert build_vqgan(official).quantize.n_embed == 128  # type: ignore[union-attr]
    assert "fix_decoder" not in restorer_arch({**official, "z_channels": 256, "embed_dim": 256})


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("config", "name"), [("configs/tiny/restoration.yaml", "smoke"),
                                              ("configs/demo/restoration.yaml", "demo"),
                                              ("configs/daefr/restoration.yaml", "release")])
def test_stage_configs_use_the_named_layouts(config: str, name: str) -> None:
    """Each restoration config builds exactly its table entry (by name or by the same keywords)."""
    path = REPO / config
    if not path.is_file():
        pytest.skip(f"{config} is not in this checkout")
    arch = yaml.safe_load(path.read_text())["model"]["init_args"].get("arch", "release")
    assert restorer_arch(arch) == restorer_arch(name)


def test_architecture_full_yaml_is_release() -> None:
    assert restorer_arch(yaml.safe_load((REPO / "configs/daefr/architecture_full.yaml").read_text())) == \
        restorer_arch("release")
