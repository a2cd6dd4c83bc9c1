"""LPIPS: loading the official file formats, an independent re-computation, frozen behaviour, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.losses.lpips import LPIPS, VGG16_WIDTHS
from daefr.testing.weights import LPIPSWeightPaths, write_random_lpips_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> LPIPSWeightPaths:
    return write_random_lpips_weights(tmp_path_factory.mktemp("lpips"))


def _images(seed: int, b: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _reference_lpips(vgg_file: Path, lin_file: Path, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS written out from the published definition, straight from torchvision's layer indices."""
    vgg = torch.load(vgg_file, weights_only=True)
    lin = torch.load(lin_file, weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    # vgg16 "D" configuration: 64,64,M,128,128,M,256x3,M,512x3,M,512x3 ; taps after the last relu of each block
    plan = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]

    def taps(x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - shift) / scale
        out = []
        for block, convs in enumerate(plan):
            if block:
                x = F.max_pool2d(x, 2)
            for i in convs:
                x = F.relu(F.conv2d(x, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1))
            out.append(x)
        return out

    total = torch.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b))):
        na = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        nb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        total += ((na - nb) ** 2 * w).sum(dim=1).mean(dim=(1, 2))
    return total


def test_matches_independent_computation(weights: LPIPSWeightPaths) -> None:
    model = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)
    a, b = _images(1), _images(2)
    got = model(a, b)
    assert got.shape == (2,)
    expected = _reference_lpips(weights.vgg, weights.lin, a, b)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert (got > 0).all()


def test_official_combined_file_and_state_dict(weights: LPIPSWeightPaths) -> None:
    a, b = _images(3), _images(4)
    ref = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)(a, b)
    from_file = LPIPS(weights_path=weights.official)(a, b)
    sd = torch.load(weights.official, weights_only=True)["state_dict"]
    from_sd = LPIPS.from_official_state_dict(sd)(a, b)
    auto = LPIPS.from_official_state_dict(sd, prefix=None)(a, b)
    for other in (from_file, from_sd, auto):
        assert torch.equal(other, ref)


def test_identical_is_zero_and_reductions(weights: LPIPSWeightPaths) -> None:
    a = _images(5, b=3)
    assert torch.equal(LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)(a, a), torch.zeros(3))
    mean = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin, reduction="mean")
    per = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)
    b = _images(6, b=3)
    assert mean(a, b).dim() == 0
    assert torch.allclose(mean(a, b), per(a, b).mean())


def test_frozen_eval_and_gradient_to_input(weights: LPIPSWeightPaths) -> None:
    model = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)
    model.train()
    assert not model.training and not model.lin0.training
    assert all(not p.requires_grad for p in model.parameters())
    x = _images(7).requires_grad_(True)
    model(x, _images(8)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    official = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin, dropout_in_train=True)
    official.train()
    assert official.lin0.training


def test_weights_dir_env_and_missing_file_errors(
    weights: LPIPSWeightPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(weights.vgg.parent))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert LPIPS().net.widths == (4, 8, 8, 16, 16)
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth.*DAEFR_WEIGHTS_DIR"):
        LPIPS()
    with pytest.raises(WeightsNotFoundError, match=r"vgg\.pth"):
        LPIPS(vgg_path=weights.vgg)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        LPIPS(vgg_path=tmp_path / "nope.pth", lin_path=weights.lin)


def test_wrong_files_give_checkpoint_errors(weights: LPIPSWeightPaths, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="features.0.weight"):
        LPIPS(vgg_path=weights.lin, lin_path=weights.lin)
    bad = torch.load(weights.lin, weights_only=True)
    bad["lin2.model.1.weight"] = torch.zeros(1, 3, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="lin2.model.1.weight"):
        LPIPS(vgg_path=weights.vgg, lin_path=tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        LPIPS(vgg_path=tmp_path / "junk.pth", lin_path=weights.lin)


def test_state_dict_layout_matches_official_manifest(parity_dir: Path) -> None:
    manifest = json.loads((parity_dir / "official_keys.json").read_text())["models"]["HQ_codebook"]["keys"]
    prefix = "loss.perceptual_loss."
    official = {k[len(prefix) :]: tuple(v[0]) for k, v in manifest.items() if k.startswith(prefix)}
    model = LPIPS(pretrained=False, widths=VGG16_WIDTHS)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official


def test_registry_builds_lpips(weights: LPIPSWeightPaths) -> None:
    from daefr.registry import REGISTRY

    model = REGISTRY.build("losses", {"name": "lpips", "weights_path": str(weights.official), "reduction": "mean"})
    assert isinstance(model, LPIPS) and model.reduction == "mean"


def test_metrics_suite_reads_official_checkpoint_layout(weights: LPIPSWeightPaths, tmp_path: Path) -> None:
    import numpy as np

    from daefr.metrics.images import write_rgb8
    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    write_rgb8(tmp_path / "restored" / "x.png", a)
    write_rgb8(tmp_path / "gt" / "x.png", b)
    via_ckpt = evaluate_folders(tmp_path / "restored", tmp_path / "gt",
                                config=MetricsConfig(metrics=("lpips",), lpips_weights=str(weights.official)))
    expected = LPIPS(vgg_path=weights.vgg, lin_path=weights.lin)(
        torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1,
        torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1,
    )
    assert via_ckpt.summary["lpips"] == pytest.approx(float(expected[0]), rel=1e-6)
    missing = evaluate_folders(tmp_path / "restored", tmp_path / "gt",
                               config=MetricsConfig(metrics=("lpips",), lpips_weights=str(tmp_path / "no.ckpt")))
    assert "no.ckpt" in missing.skipped["lpips"]
