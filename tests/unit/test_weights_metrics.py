"""Metric weights (every caller of utils.weights.resolve_weights) accept names, hf:// URIs and URLs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.errors import CheckpointError
from daefr.testing.hub_cache import isolated_hub_env, write_hub_snapshot
from daefr.testing.weights import write_random_arcface_weights


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, Path]:
    return isolated_hub_env(monkeypatch, tmp_path / "home")


def test_arcface_by_name_from_the_url_cache(env, tmp_path) -> None:
    from daefr.metrics.arcface import load_arcface

    source = write_random_arcface_weights(tmp_path / "src.pth")
    cached = env["urls"] / "arcface_resnet18.pth"  # torch.hub's name for the GFPGAN release URL
    cached.parent.mkdir(parents=True)
    cached.write_bytes(source.read_bytes())
    (env["urls"] / "arcface_resnet18.pth.sha256").write_text(hashlib.sha256(cached.read_bytes()).hexdigest())
    by_name, by_path = load_arcface("arcface-resnet18"), load_arcface(source)
    for (k, a), b in zip(by_name.state_dict().items(), by_path.state_dict().values()):
        assert torch.equal(a, b), k
    cached.write_bytes(cached.read_bytes()[:-8] + b"\0" * 8)  # the recorded sha256 catches a change
    from daefr.utils import hub

    hub._VERIFIED.clear()
    with pytest.raises(CheckpointError, match="corrupted"):
        load_arcface("arcface-resnet18")


def test_niqe_parameters_by_hf_uri(env) -> None:
    from daefr.metrics.niqe import load_niqe_params

    rng = np.random.default_rng(0)
    mu = rng.normal(size=36)
    a = rng.normal(size=(36, 36))
    cov = a @ a.T + np.eye(36)
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, cov=cov)
    write_hub_snapshot(env["hub"], "someone/niqe", {"params/niqe_pris_params.npz": buffer.getvalue()})
    got_mu, got_cov = load_niqe_params("hf://someone/niqe/params/niqe_pris_params.npz")
    assert np.allclose(got_mu.ravel(), mu) and np.allclose(got_cov, cov)


def test_evaluate_scores_lpips_with_the_weights_inside_the_released_codebook(env, tmp_path) -> None:
    from PIL import Image

    from daefr.cli import main
    from daefr.testing.hub_cache import DAEFR_REPO
    from daefr.testing.weights import write_random_lpips_weights

    official = write_random_lpips_weights(tmp_path / "lpips").official  # {"state_dict": {"loss.perceptual_loss.*"}}
    write_hub_snapshot(env["hub"], DAEFR_REPO, {"HQ_codebook.ckpt": official.read_bytes()})
    rng = np.random.default_rng(0)
    for folder in ("restored", "gt"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    import json

    scores = []
    for spec in ("daefr-hq-codebook", str(official)):
        out = tmp_path / f"report{len(scores)}"
        assert main(["evaluate", "--restored", str(tmp_path / "restored"), "--gt", str(tmp_path / "gt"),
                     "--out", str(out), "--metrics", "lpips", "--strict", "--lpips-weights", spec]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["skipped"] == {} and summary["info"]["config"]["lpips_weights"] == spec
        scores.append(summary["summary"]["lpips"])
    assert scores[0] == scores[1] and scores[0] > 0  # the name reads the same weights as the file
