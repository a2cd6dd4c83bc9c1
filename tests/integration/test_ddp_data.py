"""Multi-process training from shards through the CLI: DDP on CPU (gloo), simulated nodes, torchrun.

Every run is a subprocess (never DDP inside pytest). Training runs use the real tiny LQ
codebook stage (``configs/tiny/lq_codebook.yaml``: degradation on the device, GAN loss); the crash
tests use the small test-fixture module in ``tests/ddp_fixtures.py``. The probes (``SaveRankWeights``,
``DieOnRank``) are callbacks that work with any LightningModule.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
PYTHON = sys.executable
STEPS, BATCH = 4, 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(TESTS_DIR))
    from daefr.data.shards import ShardOptions, write_shards
    from data_helpers import make_image_folder

    root = tmp_path_factory.mktemp("ddp")
    make_image_folder(root / "src", n_good=24, bad=False)
    write_shards(root / "src", root / "shards", ShardOptions(maxcount=3))
    return root / "shards"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _real_stage() -> dict[str, object]:
    """The model block of the tiny LQ codebook config (degradation on the device, GAN loss, BatchNorm)."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "tiny" / "lq_codebook.yaml").read_text())
    return {"model": config["model"], "degradation": config["data"]["init_args"]["degradation"]}


def _config(path: Path, shards: Path, out: Path, *, devices: int, num_nodes: int = 1,
            die_rank: int | None = None, real_stage: bool = True, gpu: bool = False) -> Path:
    callbacks: list[dict[str, object]] = [
        {"class_path": "ddp_fixtures.SaveRankWeights", "init_args": {"dirpath": str(out)}}
    ]
    # Separately started nodes rendezvous at about the same time, so a short collective timeout is
    # safe there and bounds how long a survivor waits for a dead peer. The single-command launcher
    # starts rank 1 only after rank 0 has loaded everything, so it keeps the default timeout; its
    # process observer stops the job when a child dies.
    # GAN stages leave the discriminator unused in the generator step: DDP must allow unused parameters
    strategy: dict[str, object] = {"class_path": "lightning.pytorch.strategies.DDPStrategy",
                                   "init_args": {"find_unused_parameters": True}}
    if not gpu:
        strategy["init_args"]["process_group_backend"] = "gloo"  # type: ignore[index]
    if num_nodes > 1:
        strategy["init_args"]["timeout"] = "0:01:00"  # type: ignore[index]
    if die_rank is not None:
        callbacks.append({"class_path": "ddp_fixtures.DieOnRank", "init_args": {"rank": die_rank, "batch_idx": 2}})
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": devices, "num_nodes": num_nodes, "max_steps": STEPS,
            "strategy": strategy,
            "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "limit_val_batches": 0,
            "callbacks": callbacks,
        },
        "model": {"class_path": "ddp_fixtures.TinyAutoencoder"},
        "data": {"class_path": "daefr.data.FaceDataModule", "init_args": {
            "train": str(shards), "image_size": 32, "batch_size": BATCH, "shuffle_buffer": 4,
            "key_log_dir": str(out)}},
    }
    if real_stage:
        stage = _real_stage()
        config["model"] = stage["model"]
        config["data"]["init_args"]["degradation"] = stage["degradation"]  # type: ignore[index]
        if gpu:  # let the discriminator (the only BatchNorm user) run from the first step
            config["model"]["init_args"]["loss"]["disc_start"] = 0  # type: ignore[index]
            config["trainer"]["accelerator"] = "gpu"  # type: ignore[index]
    path.write_text(yaml.safe_dump(config))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK",
                                                             "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _run_all(commands: list[tuple[list[str], dict[str, str]]], cwd: Path, timeout: float) -> list[tuple[int, str]]:
    """Start every command in its own session; wait for all; kill everything left at the deadline."""
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True) for cmd, env in commands]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out))
    except subprocess.TimeoutExpired:
        pytest.fail(f"processes still running after {timeout:.0f} s (hang)")
    finally:
        for proc in procs:
            try:  # the session also holds any rank a launcher started
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return results


def _fit(config: Path) -> list[str]:
    return [PYTHON, "-m", "daefr", "fit", "--config", str(config)]


def _check_ranks_agree(out: Path, world_size: int) -> None:
    infos = [json.loads((out / f"info-rank{r}.json").read_text()) for r in range(world_size)]
    assert all(i["world_size"] == world_size and i["global_step"] == STEPS for i in infos)
    keys = [(out / f"keys-rank{r}.txt").read_text().split() for r in range(world_size)]
    assert len(keys[0]) >= BATCH and all(len(k) == len(keys[0]) for k in keys)  # same steps on every rank
    for r in range(1, world_size):
        assert not set(keys[0]) & set(keys[r]), "ranks saw the same samples"
    weights = [torch.load(out / f"weights-rank{r}.pt") for r in range(world_size)]
    params = [k for k in weights[0] if "running_" not in k and "num_batches" not in k]
    assert params
    for other in weights[1:]:
        for name in params:
            assert torch.equal(weights[0][name], other[name]), f"{name} differs between ranks"
    initial = torch.load(out / "initial-rank0.pt")
    assert any(not torch.equal(weights[0][n], initial[n]) for n in params)  # it trained


def test_two_process_ddp_trains_on_disjoint_samples_with_identical_weights(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(tmp_path / "ddp.yaml", shards, out, devices=2)
    port = str(_free_port())
    [(code, log)] = _run_all([(_fit(config), _env(MASTER_PORT=port))], tmp_path, timeout=240)
    assert code == 0, log[-3000:]
    _check_ranks_agree(out, 2)


def test_two_simulated_nodes_and_torchrun_two_nodes(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "nodes"
    config = _config(tmp_path / "nodes.yaml", shards, out, devices=1, num_nodes=2)
    port = str(_free_port())
    commands = [(_fit(config), _env(NODE_RANK=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for n in (0, 1)]
    results = _run_all(commands, tmp_path, timeout=240)
    assert [c for c, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    _check_ranks_agree(out, 2)

    out = tmp_path / "torchrun"
    config = _config(tmp_path / "torchrun.yaml", shards, out, devices=1, num_nodes=2)
    port = str(_free_port())
    commands = [([PYTHON, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                  "--node-rank", str(n), "--master-addr", "127.0.0.1", "--master-port", port,
                  "-m", "daefr", "fit", "--config", str(config)], _env()) for n in (0, 1)]
    results = _run_all(commands, tmp_path, timeout=240)
    assert [c for c, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    _check_ranks_agree(out, 2)
    info = json.loads((out / "info-rank1.json").read_text())
    assert info["node_rank"] == 1 and info["num_nodes"] == 2


@pytest.mark.parametrize("layout", ["ddp", "nodes"])
def test_a_dead_rank_fails_the_whole_job_in_bounded_time(shards: Path, tmp_path: Path, layout: str) -> None:
    out = tmp_path / "out"
    port = str(_free_port())
    if layout == "ddp":  # rank 1 is a child of the launcher: the launcher's observer kills the job
        config = _config(tmp_path / "die.yaml", shards, out, devices=2, die_rank=1, real_stage=False)
        commands = [(_fit(config), _env(MASTER_PORT=port))]
    else:  # node 1 dies: node 0 must give up at the collective timeout instead of hanging
        config = _config(tmp_path / "die.yaml", shards, out, devices=1, num_nodes=2, die_rank=1, real_stage=False)
        commands = [(_fit(config), _env(NODE_RANK=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
                    for n in (0, 1)]
    started = time.monotonic()
    results = _run_all(commands, tmp_path, timeout=200)
    assert all(code != 0 for code, _ in results), [c for c, _ in results]
    assert not list(out.glob("info-rank*.json"))  # nobody finished training
    assert time.monotonic() - started < 200


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cluster_config_on_one_gpu_syncs_discriminator_batchnorm(shards: Path, tmp_path: Path) -> None:
    """configs/cluster/ddp_gpu.yaml on one GPU: DDP + SyncBatchNorm in the discriminator, degradation on CUDA."""
    out = tmp_path / "gpu"
    config = _config(tmp_path / "gpu.yaml", shards, out, devices=1, gpu=True)
    command = _fit(config) + [
        "--config", str(REPO_ROOT / "configs" / "cluster" / "ddp_gpu.yaml"),
        "--trainer.devices", "1", "--trainer.max_steps", "4",
        "--data.init_args.epoch_length", "4", "--data.init_args.num_workers", "1", "--data.init_args.batch_size", "2",
    ]
    [(code, log)] = _run_all([(command, _env(MASTER_PORT=str(_free_port())))], tmp_path, timeout=300)
    assert code == 0, log[-3000:]
    info = json.loads((out / "info-rank0.json").read_text())
    assert info["device"].startswith("cuda") and info["sync_batchnorm_layers"] > 0
