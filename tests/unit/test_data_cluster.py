"""configs/cluster: the multi-GPU overrides compose with a stage config; launch scripts are valid bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from daefr.lightning_cli import run_lightning


@pytest.mark.slow
def test_ddp_gpu_overrides_compose_with_a_paper_config(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_lightning([
        "fit", "--config", str(repo_root / "configs/daefr/hq_codebook.yaml"),
        "--config", str(repo_root / "configs/cluster/ddp_gpu.yaml"),
        "--trainer.num_nodes", "2", "--data.init_args.train", "/data/shard-{000000..000009}.tar",
        "--print_config",
    ])
    assert code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    trainer = config["trainer"]
    assert trainer["strategy"]["class_path"].endswith("DDPStrategy")
    assert trainer["strategy"]["init_args"]["find_unused_parameters"] is True
    assert trainer["sync_batchnorm"] is True and trainer["num_nodes"] == 2
    data = config["data"]
    assert data["class_path"] == "daefr.data.FaceDataModule"
    assert data["init_args"]["resampled"] is True and data["init_args"]["epoch_length"] > 0
    assert data["init_args"]["train"] == "/data/shard-{000000..000009}.tar"
    assert data["init_args"]["degradation"] is None or "name" in data["init_args"]["degradation"]
    assert config["model"]["class_path"] == "daefr.stages.CodebookStage"  # the stage config is kept


@pytest.mark.parametrize("script", ["slurm.sbatch", "torchrun.sh"])
def test_launch_scripts_are_valid_bash_and_name_existing_configs(repo_root: Path, script: str) -> None:
    path = repo_root / "configs" / "cluster" / script
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    subprocess.run([bash, "-n", str(path)], check=True)
    text = path.read_text()
    assert "configs/cluster/ddp_gpu.yaml" in text and "--trainer.num_nodes" in text
    assert (repo_root / "configs/daefr/hq_codebook.yaml").is_file()
    # without SHARDS the script stops with a message instead of training on nothing
    result = subprocess.run([bash, str(path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "set SHARDS" in result.stderr
