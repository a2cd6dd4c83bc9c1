"""``daefr predict``: a trained restoration stage restores a folder of LQ faces through the data module's
``predict`` source and the ``RestoredImageWriter`` callback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daefr.cli import main

REPO = Path(__file__).resolve().parents[2]
FIXED = "data={class_path: daefr.testing.stages.FixedBatchDataModule, init_args: {image_size: 32, batch_size: 2}}"


@pytest.mark.slow
def test_predict_restores_a_folder_like_the_exported_restorer(tmp_path: Path) -> None:
    chain_out = tmp_path / "chain"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "daefr", "train", str(REPO / "configs/tiny/chain.yaml"), "--out",
                           str(chain_out), FIXED, "trainer.max_steps=2", "trainer.val_check_interval=2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    faces = tmp_path / "lq"
    faces.mkdir()
    for src in sorted((REPO / "src/daefr/assets/demo_faces/val").glob("*.png"))[:3]:
        Image.open(src).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC).save(faces / src.name)
    out = tmp_path / "restored"
    predict = {
        "data": {"class_path": "daefr.data.FaceDataModule",
                 "init_args": {"predict": str(faces), "image_size": 32, "batch_size": 2}},
        "trainer": {"callbacks": [{"class_path": "daefr.stages.RestoredImageWriter",
                                   "init_args": {"output_dir": str(out)}}],
                    "logger": False, "default_root_dir": str(tmp_path / "predict")},
        "model": {"init_args": {"init_hq_codebook_from": None, "init_association_from": None, "export_path": None}},
    }
    (tmp_path / "predict.yaml").write_text(json.dumps(predict))
    ckpt = chain_out / "restoration" / "checkpoints" / "final.ckpt"
    assert main(["predict", "--config", str(REPO / "configs/tiny/restoration.yaml"), "--config",
                 str(tmp_path / "predict.yaml"), "--ckpt_path", str(ckpt)]) == 0
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted(p.name for p in faces.glob("*.png"))

    import daefr

    restorer = daefr.load_restorer(chain_out / "restoration" / "restorer.safetensors")
    name = written[0]
    lq = torch.from_numpy(np.asarray(Image.open(faces / name))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        expected = ((restorer(lq).clamp(-1, 1)[0] + 1) * 127.5).round().permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(out / name)).astype(np.float64)
    assert np.abs(got - expected).max() <= 1.0
