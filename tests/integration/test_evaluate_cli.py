"""`daefr make-testset` and `daefr evaluate` end to end on tiny real faces with random networks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.cli import main
from daefr.metrics.images import read_rgb8, write_rgb8
from daefr.testing.weights import write_random_arcface_weights, write_random_lpips_weights

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _strict(path: Path) -> dict:  # type: ignore[type-arg]
    def refuse(name: str) -> None:
        raise ValueError(name)

    return json.loads(path.read_text(), parse_constant=refuse)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces" / "hq512"
    out = tmp_path_factory.mktemp("hq")
    photos = sorted(shared.glob("*.jpg"))[:3] if shared.is_dir() else []
    if photos:
        for p in photos:
            Image.open(p).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC).save(out / f"{p.stem}.png")
    else:  # generated stand-ins when ../shared is absent
        rng = np.random.default_rng(0)
        for i in range(3):
            write_rgb8(out / f"face{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return out


@pytest.fixture(scope="module")
def testset(hq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("testset")
    assert main(["make-testset", "--hq", str(hq_dir), "--out", str(out), "--preset", "daefr_small", "--seed", "7"]) == 0
    return out


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_random_lpips_weights(folder)
    write_random_arcface_weights(folder / "resnet18_110.pth")
    return folder


def test_make_testset_is_paired_seeded_and_replayable(testset: Path, hq_dir: Path, tmp_path: Path) -> None:
    names = sorted(p.stem for p in hq_dir.glob("*.png"))
    for sub in ("gt", "lq", "params"):
        assert sorted(p.stem for p in (testset / sub).iterdir()) == names
    manifest = _strict(testset / "manifest.json")
    assert manifest["preset"] == "daefr_small" and manifest["base_seed"] == 7 and manifest["images"] == names
    # same seed, other folder contents -> same LQ for the same image; another seed -> a different LQ
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / f"{names[1]}.png").write_bytes((hq_dir / f"{names[1]}.png").read_bytes())
    assert main(["make-testset", "--hq", str(subset), "--out", str(tmp_path / "again"), "--preset", "daefr_small",
                 "--seed", "7"]) == 0
    assert np.array_equal(read_rgb8(tmp_path / "again" / "lq" / f"{names[1]}.png"), read_rgb8(testset / "lq" / f"{names[1]}.png"))
    assert main(["make-testset", "--hq", str(subset), "--out", str(tmp_path / "other"), "--preset", "daefr_small",
                 "--seed", "8"]) == 0
    assert not np.array_equal(read_rgb8(tmp_path / "other" / "lq" / f"{names[1]}.png"), read_rgb8(testset / "lq" / f"{names[1]}.png"))
    # the recorded parameters reproduce the LQ image exactly
    from daefr.registry import REGISTRY

    record = _strict(testset / "params" / f"{names[0]}.json")
    params = {}
    for key, value in record["params"].items():
        dtype = torch.bool if isinstance(value, bool) else torch.long if isinstance(value, int) else torch.float32
        params[key] = torch.tensor([value], dtype=dtype)
    hq = torch.from_numpy(read_rgb8(testset / "gt" / f"{names[0]}.png")).permute(2, 0, 1)[None].float() / 255
    lq = REGISTRY.build("degradations", "daefr_small").replay(hq, params).lq
    replayed = (lq[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(replayed, read_rgb8(testset / "lq" / f"{names[0]}.png"))


def test_evaluate_paired_with_weights_and_skips(testset: Path, weights_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["evaluate", "--restored", str(testset / "lq"), "--gt", str(testset / "gt"), "--lq", str(testset / "lq"),
                 "--out", str(out), "--weights-dir", str(weights_dir), "--metrics", "psnr,ssim,lpips,deg,lmd,niqe"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "niqe: skipped" in printed and "niqe_pris_params.npz" in printed
    data = _strict(out / "summary.json")
    assert set(data["summary"]) == {"psnr", "ssim", "lpips", "deg", "lmd"}
    assert 0 < data["summary"]["psnr"] < 60 and 0 < data["summary"]["ssim"] < 1 and data["summary"]["lpips"] > 0
    assert data["summary"]["deg"] > 0 and data["summary"]["lmd"] >= 0
    header = (out / "per_image.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["name", "psnr", "ssim", "lpips", "deg", "lmd"]
    assert "LMD" in (out / "report.html").read_text()
    # --strict turns the missing NIQE file into a one-line error
    code = main(["evaluate", "--restored", str(testset / "lq"), "--gt", str(testset / "gt"), "--out", str(tmp_path / "s"),
                 "--metrics", "psnr,niqe", "--niqe-params", str(tmp_path / "nope.npz"), "--strict"])
    assert code == 1
    assert "nope.npz" in capsys.readouterr().err


def test_evaluate_identical_and_no_reference(testset: Path, weights_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "same"
    assert main(["evaluate", "--restored", str(testset / "gt"), "--gt", str(testset / "gt"), "--out", str(out),
                 "--weights-dir", str(weights_dir), "--metrics", "psnr,ssim,lpips", "--y-channel"]) == 0
    data = _strict(out / "summary.json")
    assert data["summary"]["psnr"] == "inf" and data["summary"]["ssim"] == pytest.approx(1.0)
    assert data["summary"]["lpips"] == 0.0 and data["info"]["config"]["y_channel"] is True
    # no-reference: NIQE from a user-fitted pristine model (32 px blocks for 64 px faces)
    from daefr.metrics.niqe import fit_niqe_params, save_niqe_params

    mu, cov = fit_niqe_params([read_rgb8(p) for p in sorted((testset / "gt").iterdir())], block_size=32)
    params = save_niqe_params(tmp_path / "niqe.npz", mu, cov)
    assert main(["evaluate", "--restored", str(testset / "lq"), "--out", str(tmp_path / "nr"), "--niqe-params",
                 str(params), "--niqe-block-size", "32", "--metrics", "niqe"]) == 0
    nr = _strict(tmp_path / "nr" / "summary.json")
    assert math.isfinite(nr["summary"]["niqe"]) and "psnr" not in nr["summary"]
    assert main(["evaluate", "--restored", str(testset / "lq"), "--out", str(tmp_path / "x"), "--metrics", "psnr"]) == 1


def test_evaluate_compare(testset: Path, tmp_path: Path) -> None:
    for name, restored in (("a", "lq"), ("b", "gt")):
        assert main(["evaluate", "--restored", str(testset / restored), "--gt", str(testset / "gt"),
                     "--out", str(tmp_path / name), "--metrics", "psnr,ssim"]) == 0
    assert main(["evaluate", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    data = _strict(tmp_path / "cmp" / "compare.json")
    assert data["summary"]["ssim"]["b_minus_a"] > 0 and len(data["images"]) == 3


def test_evaluate_restores_with_a_restorer(testset: Path, tmp_path: Path) -> None:
    from torch import nn

    from daefr.inference.restorer import Restorer
    from daefr.metrics.restore import restore_folder
    from daefr.metrics.suite import MetricsConfig, evaluate_folders

    class Identity(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    restorer = Restorer(Identity(), device="cpu", face_size=64)
    written = restore_folder(restorer, testset / "lq", tmp_path / "restored")
    assert len(written) == 3
    for path in written:  # identity network at the input size: restored == LQ
        assert np.array_equal(read_rgb8(path), read_rgb8(testset / "lq" / path.name))
    cfg = MetricsConfig(metrics=("psnr",))
    via_restorer = evaluate_folders(tmp_path / "restored", testset / "gt", config=cfg).summary["psnr"]
    direct = evaluate_folders(testset / "lq", testset / "gt", config=cfg).summary["psnr"]
    assert via_restorer == pytest.approx(direct, abs=1e-12)


@pytest.mark.slow
def test_evaluate_checkpoint_mode(testset: Path, tmp_path: Path) -> None:
    restorer_module = pytest.importorskip("daefr.models.restorer", reason="the DAEFR restorer model is not available")
    model = restorer_module.DAEFRRestorer.from_config("tiny")
    from daefr.interop.restorer_io import save_restorer

    ckpt = save_restorer(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "ckpt_run"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--lq", str(testset / "lq"), "--gt", str(testset / "gt"),
                 "--out", str(out), "--metrics", "psnr,ssim"]) == 0
    assert sorted(p.name for p in (out / "restored").iterdir()) == sorted(p.name for p in (testset / "lq").iterdir())
    data = _strict(out / "summary.json")
    assert data["info"]["images"] == 3 and math.isfinite(data["summary"]["psnr"])
