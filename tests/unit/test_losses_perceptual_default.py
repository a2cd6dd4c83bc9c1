"""``loss: {name: vqgan}`` trains with LPIPS (weight 1.0) as its help says; ``perceptual_weight: 0`` turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from daefr.errors import WeightsNotFoundError
from daefr.losses.lpips import LPIPS
from daefr.registry import REGISTRY
from daefr.stages import CodebookStage
from daefr.testing.weights import write_random_lpips_weights

REPO = Path(__file__).resolve().parents[2]
DISC = {"name": "patchgan", "ndf": 8, "n_layers": 2}
ENC = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16,
       "attn_resolutions": [], "z_channels": 8}


@pytest.fixture()
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$DAEFR_WEIGHTS_DIR`` holding tiny random LPIPS files; the torch hub cache points at an empty folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "weights"
    write_random_lpips_weights(folder)
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(folder))
    return folder


def _p_loss_logged(loss: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    return loss.generator_loss(torch.tensor(0.0), x, y, 0, None)[1]  # type: ignore[operator,no-any-return]


def test_default_vqgan_loss_uses_lpips_with_weight_one(weights_dir: Path) -> None:
    loss = REGISTRY.build("losses", {"name": "vqgan", "discriminator": DISC})
    assert isinstance(loss.perceptual, LPIPS) and loss.perceptual_weight == 1.0
    logs = _p_loss_logged(loss)
    assert float(logs["train/p_loss"]) > 0
    assert torch.allclose(logs["train/nll_loss"], logs["train/rec_loss"] + logs["train/p_loss"])
    # a stage with the default loss spec trains with it too
    stage = CodebookStage(encoder=ENC, decoder=ENC, codebook={"name": "vq", "n_embed": 16, "embed_dim": 8}, scale_lr=False)
    assert isinstance(stage.loss.perceptual, LPIPS) and stage.loss.perceptual_weight == 1.0


def test_paper_config_loss_has_lpips(weights_dir: Path) -> None:
    config = yaml.safe_load((REPO / "configs/daefr/hq_codebook.yaml").read_text())
    spec = {**config["model"]["init_args"]["loss"], "discriminator": DISC}
    loss = REGISTRY.build("losses", spec)
    assert isinstance(loss.perceptual, LPIPS) and loss.perceptual_weight == 1.0


def test_missing_lpips_weights_fail_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth.*perceptual_weight: 0"):
        REGISTRY.build("losses", {"name": "vqgan", "discriminator": DISC})


def test_explicit_zero_weight_turns_lpips_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path / "empty"))  # no files needed
    loss = REGISTRY.build("losses", {"name": "vqgan", "perceptual_weight": 0, "discriminator": DISC})
    assert loss.perceptual is None and loss.perceptual_weight == 0.0
    logs = _p_loss_logged(loss)
    assert "train/p_loss" not in logs
    assert torch.equal(logs["train/nll_loss"], logs["train/rec_loss"])
