"""Exact mid-epoch resume over shards: a job SIGKILLed mid-epoch and resumed from its last checkpoint sees
the same samples in the same order as an uninterrupted run (2 data workers; 1 process and 2 DDP ranks).

Everything runs the real ``daefr fit`` (FaceDataModule over ``daefr shard`` output, shuffle buffer,
flips, a ModelCheckpoint every step and ResumeState) in subprocesses; the kill takes the whole process
group (every rank and data worker). The model is the real HQ codebook stage, shrunk to 16 px.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
BATCH = 2
SMALL_MODEL = {
    "encoder": {"name": "vqgan", "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "resolution": 16,
                "attn_resolutions": [], "z_channels": 8},
    "decoder": "${model.init_args.encoder}",
    "codebook": {"name": "vq", "n_embed": 16, "embed_dim": 8},
}


def _model() -> dict[str, Any]:
    model: dict[str, Any] = yaml.safe_load((REPO / "configs" / "tiny" / "hq_codebook.yaml").read_text())["model"]
    model["init_args"].update(SMALL_MODEL)
    model["init_args"]["loss"].update(disc_start=3, discriminator={"name": "patchgan", "ndf": 4, "n_layers": 1})
    return model


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daefr.data.shards import ShardOptions, write_shards
    from data_helpers import make_image_folder

    root = tmp_path_factory.mktemp("resume_kill")
    make_image_folder(root / "src", n_good=24, bad=False)
    write_shards(root / "src", root / "shards", ShardOptions(maxcount=3))  # 8 shards of 3
    return root / "shards"


def _config(path: Path, shards: Path, out: Path, *, devices: int, steps: int, kill_step: int | None) -> Path:
    callbacks: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(out / "ckpt"), "save_last": True, "every_n_train_steps": 1,
                       "save_top_k": 1, "monitor": None}},
        {"class_path": "daefr.stages.ResumeState"},
        {"class_path": "ddp_fixtures.SaveRankWeights", "init_args": {"dirpath": str(out)}},
    ]
    if kill_step is not None:
        callbacks.append({"class_path": "ddp_fixtures.KillJobAtStep", "init_args": {"step": kill_step}})
    trainer: dict[str, Any] = {
        "accelerator": "cpu", "devices": devices, "max_steps": steps, "logger": False, "deterministic": True,
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
        "limit_val_batches": 0, "default_root_dir": str(out), "callbacks": callbacks,
    }
    if devices > 1:
        trainer["strategy"] = {"class_path": "lightning.pytorch.strategies.DDPStrategy",
                               "init_args": {"process_group_backend": "gloo", "find_unused_parameters": True}}
    config = {
        "seed_everything": 0,
        "trainer": trainer,
        "model": _model(),
        "data": {"class_path": "daefr.data.FaceDataModule", "init_args": {
            "train": str(shards), "image_size": 16, "batch_size": BATCH, "num_workers": 2, "shuffle_buffer": 4,
            "flip": True, "key_log_dir": str(out)}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fit(args: list[str], cwd: Path, timeout: float = 400) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK",
                                                            "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_PORT=str(_free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "daefr", "fit", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = ""
        pytest.fail(f"daefr fit {args} still running after {timeout:.0f} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the job left behind
        except ProcessLookupError:
            pass
    return proc.returncode, out


def _keys(out: Path, rank: int) -> list[str]:
    return (out / f"keys-rank{rank}.txt").read_text().split()


@pytest.mark.parametrize(("devices", "steps", "kill_step"), [
    (1, 16, 7),  # 12 batches per epoch: killed in epoch 0, the resumed run crosses into epoch 1
    pytest.param(2, 9, 4, marks=pytest.mark.ddp),  # 6 batches per rank and epoch
])
def test_sigkill_mid_epoch_then_resume_sees_the_same_samples(shards: Path, tmp_path: Path, devices: int,
                                                            steps: int, kill_step: int) -> None:
    straight, killed, resumed = tmp_path / "straight", tmp_path / "killed", tmp_path / "resumed"
    code, log = _fit(["--config", str(_config(tmp_path / "a.yaml", shards, straight, devices=devices, steps=steps,
                                              kill_step=None))], tmp_path)
    assert code == 0, log[-3000:]
    code, log = _fit(["--config", str(_config(tmp_path / "b.yaml", shards, killed, devices=devices, steps=steps,
                                              kill_step=kill_step))], tmp_path)
    assert code == -signal.SIGKILL, (code, log[-3000:])
    last = killed / "ckpt" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == kill_step
    per_epoch = 24 // (BATCH * devices)
    assert 0 < kill_step % per_epoch  # really mid-epoch
    ranks = checkpoint["callbacks"]["ResumeState"]["data_ranks"]
    assert len(ranks) == devices and all(ranks)
    if devices > 1:  # each rank has its own position: Lightning alone would save rank 0's for both
        assert ranks[0] != ranks[1]
    code, log = _fit(["--config", str(_config(tmp_path / "c.yaml", shards, resumed, devices=devices, steps=steps,
                                              kill_step=None)), "--ckpt_path", str(last)], tmp_path)
    assert code == 0, log[-3000:]
    for rank in range(devices):
        expected = _keys(straight, rank)
        assert len(expected) == steps * BATCH
        before_kill = _keys(killed, rank)[: kill_step * BATCH]
        after = _keys(resumed, rank)
        assert before_kill + after == expected, f"rank {rank}: resumed data differs from the uninterrupted run"
    if devices > 1:
        assert not set(_keys(straight, 0)[:per_epoch * BATCH]) & set(_keys(straight, 1)[:per_epoch * BATCH])
    # same samples, same flips, same order: the weights come out bit for bit the same
    a = torch.load(straight / "weights-rank0.pt", weights_only=True)
    c = torch.load(resumed / "weights-rank0.pt", weights_only=True)
    assert all(torch.equal(a[k], c[k]) for k in a)
