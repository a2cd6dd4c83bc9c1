"""Restorer entry points take weights names and hf:// URIs (restore, convert, load_restorer, Restorer),
and restore uses the released model when no weights are given."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daefr.cli import main
from daefr.errors import CheckpointError
from daefr.testing.daefr_tiny import random_official_state_dict
from daefr.testing.hub_cache import DAEFR_REPO, checkpoint_bytes, isolated_hub_env, write_hub_snapshot

MICRO = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32, "attn_resolutions": [16],
         "z_channels": 64, "embed_dim": 64, "n_embed": 64, "n_layers": 2, "dim_mlp": 128, "transformer_dim": 64}


@pytest.fixture
def released(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    env = isolated_hub_env(monkeypatch, tmp_path / "home")
    sd = random_official_state_dict(MICRO, seed=3)
    write_hub_snapshot(env["hub"], DAEFR_REPO, {"DAEFR_model.ckpt": checkpoint_bytes(sd)})
    return sd


@pytest.fixture
def crop(tmp_path) -> Path:
    path = tmp_path / "in" / "face.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_load_restorer_and_restorer_by_name_and_uri(released) -> None:
    import daefr
    from daefr.inference.restorer import Restorer

    by_name = daefr.load_restorer("daefr")
    by_uri = daefr.load_restorer(f"hf://{DAEFR_REPO}/DAEFR_model.ckpt@main")
    assert torch.equal(by_name.predictor.position_emb, released["position_emb"])
    assert torch.equal(by_uri.predictor.position_emb, released["position_emb"])
    assert Restorer.from_pretrained("daefr", device="cpu") is not None


def test_restore_uses_the_released_model_by_default(released, crop, tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["restore", str(crop.parent), "--aligned", "-o", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert (out / "restored_faces" / "face.png").is_file()


def test_restore_offline_without_the_model_is_one_line(tmp_path, monkeypatch, crop, capsys) -> None:
    isolated_hub_env(monkeypatch, tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["restore", str(crop.parent), "--aligned", "-o", str(tmp_path / "o"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "daefr weights download daefr" in err[0]


def test_convert_by_name(released, tmp_path, capsys) -> None:
    out = tmp_path / "model.safetensors"
    assert main(["convert", "daefr", str(out)]) == 0
    assert out.is_file()


def test_a_fifo_as_restorer_weights_is_refused(released, tmp_path) -> None:
    import daefr

    fifo = tmp_path / "model.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="FIFO"):
        daefr.load_restorer(fifo)
