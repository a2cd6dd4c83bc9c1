"""FID: Frechet distance against scipy, low-rank fast paths, statistics files, Inception weight loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from daefr.errors import CheckpointError, ConfigError, WeightsNotFoundError
from daefr.metrics.fid import (
    frechet_distance,
    frechet_distance_features,
    inception_features,
    load_statistics,
    save_statistics,
    statistics,
)
from daefr.metrics.inception import FIDInceptionV3, load_fid_inception
from daefr.testing.weights import write_random_fid_inception_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _scipy_fid(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_full_rank() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 12)), rng.normal(size=(150, 12)) * 1.3 + 0.5
    m1, s1 = statistics(x)
    m2, s2 = statistics(y)
    expected = _scipy_fid(m1, s1, m2, s2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_features(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)


def test_low_rank_fast_paths_equal_the_full_formula() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 64)), rng.normal(size=(9, 64)) + 0.2
    full = frechet_distance(*statistics(x), *statistics(y))
    # the full path takes square roots of singular matrices: agreement to ~1e-8 relative
    assert frechet_distance_features(x, y) == pytest.approx(full, rel=1e-7)
    assert frechet_distance_features(x, reference_stats=statistics(y)) == pytest.approx(full, rel=1e-7)
    assert full > 1.0
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_features(x[:1], y)


def test_statistics_file_round_trip_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    mu, sigma = statistics(rng.normal(size=(10, 5)))
    save_statistics(tmp_path / "ref.npz", mu, sigma)
    mu2, sigma2 = load_statistics(tmp_path / "ref.npz")
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    with pytest.raises(WeightsNotFoundError, match="missing.npz"):
        load_statistics(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ConfigError, match="mu"):
        load_statistics(tmp_path / "bad.npz")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_fid_inception_weights(tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth")


@pytest.fixture(scope="module")
def inception(inception_file: Path) -> FIDInceptionV3:
    return load_fid_inception(inception_file, resize_input=False)


def test_inception_loads_pytorch_fid_layout(inception_file: Path, inception: FIDInceptionV3) -> None:
    sd = torch.load(inception_file, weights_only=True, mmap=True)
    # the published file's layout: torchvision-style names, 1008-class head, no aux classifier
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in sd and sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)
    model = inception
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, sd["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(model.Mixed_7c.branch_pool.bn.running_mean, sd["Mixed_7c.branch_pool.bn.running_mean"])
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (76, 76, 3), dtype=np.uint8) for _ in range(2)]
    feats = inception_features(model, images, batch_size=2)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.std() > 0
    # batching must not change the features
    assert np.allclose(inception_features(model, images, batch_size=1), feats, atol=1e-5)


class _Stop(Exception):
    pass


def test_inception_default_resizes_to_299_and_scales_to_unit_range(inception: FIDInceptionV3) -> None:
    seen: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(inputs[0])
        raise _Stop  # the rest of the network is not needed for this check

    handle = inception.Conv2d_1a_3x3.register_forward_pre_hook(hook)
    inception.resize_input = True
    try:
        with pytest.raises(_Stop):
            inception(torch.ones(1, 3, 64, 64))
    finally:
        inception.resize_input = False
        handle.remove()
    assert seen[0].shape == (1, 3, 299, 299) and torch.allclose(seen[0], torch.ones(1))  # [0, 1] -> [-1, 1]


def test_inception_missing_or_wrong_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEFR_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth.*DAEFR_WEIGHTS_DIR"):
        load_fid_inception()
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="not the FID Inception weights file"):
        load_fid_inception(tmp_path / "partial.pth")


def test_suite_fid_against_folder_and_statistics_file(
    inception: FIDInceptionV3, inception_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daefr.metrics.inception as inception_module
    from daefr.metrics.images import read_rgb8, write_rgb8
    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    # reuse the module's loaded network (loading ~95 MB again would only cost time)
    monkeypatch.setattr(inception_module, "load_fid_inception", lambda path=None, resize_input=True: inception)
    rng = np.random.default_rng(4)
    for i in range(2):
        gt = rng.integers(0, 256, (76, 76, 3), dtype=np.uint8)
        write_rgb8(tmp_path / "gt" / f"{i}.png", gt)
        write_rgb8(tmp_path / "restored" / f"{i}.png", np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8))
    cfg = MetricsConfig(metrics=("fid",), inception=str(inception_file), fid_resize=False)
    from_folder = evaluate_folders(tmp_path / "restored", tmp_path / "gt", config=cfg)
    assert not from_folder.skipped and from_folder.summary["fid"] is not None and from_folder.summary["fid"] > 0
    gt_feats = inception_features(inception, [read_rgb8(p) for p in sorted((tmp_path / "gt").iterdir())])
    save_statistics(tmp_path / "ref.npz", *statistics(gt_feats))
    cfg.fid_reference = str(tmp_path / "ref.npz")
    from_file = evaluate_folders(tmp_path / "restored", None, config=cfg)  # no-reference mode with --fid-ref
    assert from_file.summary["fid"] == pytest.approx(from_folder.summary["fid"], rel=1e-6)
    cfg.fid_reference = str(tmp_path / "missing.npz")
    skipped = evaluate_folders(tmp_path / "restored", None, config=cfg)
    assert "missing.npz" in skipped.skipped["fid"] and "fid" not in skipped.summary
