"""Official-key mapping of the codebook and association checkpoints (shape-only, meta device)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from daefr.errors import CheckpointError
from daefr.interop.keymap import (
    ASSOCIATION_STAGE_KEYMAP,
    CODEBOOK_STAGE_KEYMAP,
    KeyMap,
    KeyRule,
    load_official,
    shapes_of,
)
from daefr.losses.association import PatchCLIPLoss
from daefr.losses.lpips import LPIPS
from daefr.models.presets import DISCRIMINATOR_PRESETS, build_vqgan
from daefr.nn.patchgan import PatchGANDiscriminator

Shape = tuple[int, ...]


@pytest.fixture(scope="module")
def official(parity_dir: Path) -> dict[str, dict[str, Shape]]:
    with open(parity_dir / "official_keys.json", encoding="utf-8") as fh:
        models = json.load(fh)["models"]
    return {name: {k: tuple(v[0]) for k, v in m["keys"].items()} for name, m in models.items()}


@pytest.fixture(scope="module")
def ours() -> dict[str, dict[str, Shape]]:
    """Shapes of our full-size components, built once on the meta device."""
    with torch.device("meta"):
        return {
            "vqgan": shapes_of(build_vqgan("official")),
            "discriminator": shapes_of(PatchGANDiscriminator(**DISCRIMINATOR_PRESETS["official"])),
            "lpips": shapes_of(LPIPS(pretrained=False)),
            "association": shapes_of(PatchCLIPLoss()),
        }


def _namespaced(parts: dict[str, dict[str, Shape]]) -> dict[str, Shape]:
    return {f"{ns}.{k}": shape for ns, shapes in parts.items() for k, shape in shapes.items()}


@pytest.mark.parametrize("name", ["HQ_codebook", "LQ_codebook"])
def test_codebook_checkpoint_keys_map_one_to_one(name: str, official: dict[str, Any], ours: dict[str, Any]) -> None:
    target = _namespaced({"vqgan": ours["vqgan"], "discriminator": ours["discriminator"]})
    report = CODEBOOK_STAGE_KEYMAP.report(official[name], target)
    assert report.ok, report.summary()
    assert len(report.mapped) == 405 + 22 and len(report.name_only) == 33 and not report.ignored
    assert set(report.mapped.values()) == set(target)  # every parameter of ours has a source
    lpips_names = {ours_key.removeprefix("lpips.") for ours_key in report.name_only.values()}
    assert lpips_names == set(ours["lpips"])  # the LPIPS module uses the same names


def test_association_checkpoint_keys_map_one_to_one(official: dict[str, Any], ours: dict[str, Any]) -> None:
    target = _namespaced({
        "hq": ours["vqgan"], "lq": ours["vqgan"], "hq_discriminator": ours["discriminator"],
        "lq_discriminator": ours["discriminator"], "association": ours["association"],
    })
    report = ASSOCIATION_STAGE_KEYMAP.report(official["Association_stage"], target)
    assert report.ok, report.summary()
    assert len(report.mapped) == 2 * (405 + 22) + 1 and len(report.name_only) == 66
    assert set(report.mapped.values()) == set(target)
    assert report.mapped["logit_scale"] == "association.logit_scale"
    assert report.mapped["vqvae_LQ.quantize.embedding.weight"] == "lq.quantize.embedding.weight"


def _tiny_state() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    official = {f"vqvae.{k}": torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    return model, official


def test_load_reports_unexpected_missing_and_mismatched_keys() -> None:
    keymap = KeyMap("test", [("vqvae.", "net."), KeyRule("loss.discriminator.", "disc.")])
    model, state = _tiny_state()
    report = load_official(keymap, {**state, "loss.discriminator.main.0.weight": torch.zeros(1)}, {"net": model})
    assert report.ok and torch.all(model[0].weight == 0.5)
    assert report.not_loaded == {"loss.discriminator.main.0.weight": "disc.main.0.weight"}

    with pytest.raises(CheckpointError, match=r"unexpected official keys \(no rule\): 1: extra.key"):
        load_official(keymap, {**state, "extra.key": torch.zeros(1)}, {"net": model})
    partial = {k: v for k, v in state.items() if k != "vqvae.0.bias"}
    with pytest.raises(CheckpointError, match=r"missing .*: 1: net.0.bias"):
        load_official(keymap, partial, {"net": model})
    wrong = {**state, "vqvae.0.weight": torch.zeros(5, 3, 1, 1)}
    fresh, _ = _tiny_state()
    with pytest.raises(CheckpointError, match=r"vqvae.0.weight \[5, 3, 1, 1\] vs ours \[4, 3, 1, 1\]"):
        load_official(keymap, wrong, {"net": fresh})
    assert not torch.all(fresh[0].weight == 0.5)  # strict: nothing copied before the check

    clash = KeyMap("clash", [("vqvae.", "net."), ("old.", "net.")])
    with pytest.raises(CheckpointError, match=r"map to one key: 1: net.0.bias <- vqvae.0.bias \+ old.0.bias"):
        load_official(clash, {**state, "old.0.bias": torch.zeros(4)}, {"net": fresh})

    report = load_official(keymap, partial, {"net": fresh}, strict=False)
    assert report.missing == ["net.0.bias"] and torch.all(fresh[0].weight == 0.5)


def test_ignore_rule_and_retarget() -> None:
    keymap = KeyMap("test", [("vqvae.", "vqgan."), KeyRule("vqvae.unused.", None, note="not used")])
    renamed, report = keymap.convert({"vqvae.a": torch.zeros(1), "vqvae.unused.b": torch.zeros(1)})
    assert list(renamed) == ["vqgan.a"] and report.ignored == {"vqvae.unused.b": "not used"}
    moved = CODEBOOK_STAGE_KEYMAP.retarget({"vqgan.": "autoencoder."})
    assert moved.map_key("vqvae.encoder.conv_in.weight") == "autoencoder.encoder.conv_in.weight"
    assert moved.map_key("loss.discriminator.main.0.bias") == "discriminator.main.0.bias"
    assert ASSOCIATION_STAGE_KEYMAP.map_key("vqvae_LQ.decoder.conv_out.bias") == "lq.decoder.conv_out.bias"
    assert ASSOCIATION_STAGE_KEYMAP.map_key("logit_scale_other") is None
