"""``daefr train CHAIN.yaml``: the tiny chain end to end, skip of finished stages, exact resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from daefr.chain import ChainError, load_chain, run_chain, stage_config
from daefr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CHAIN = REPO / "configs" / "tiny" / "chain.yaml"
FIXED = "data={class_path: daefr.testing.stages.FixedBatchDataModule, init_args: {image_size: 32, batch_size: 2}}"
STEPS = ["trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.callbacks.0.init_args.every_n_train_steps=3"]


def _train(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "daefr", "train", str(CHAIN), "--out", str(out), FIXED, *STEPS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen[bytes]) -> str:
    output, _ = proc.communicate(timeout=600)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return text


def test_chain_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "chain.yaml"
    bad.write_text("stages:\n  - {name: a, config: missing.yaml}\n")
    with pytest.raises(ConfigError, match="missing.yaml not found"):
        load_chain(bad)
    bad.write_text(f"stages:\n  - {{name: b, config: {CHAIN.parent / 'association.yaml'}, inputs: {{x: a}}}}\n")
    with pytest.raises(ConfigError, match="'a', which is not an earlier stage"):
        load_chain(bad)
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_chain(CHAIN, overrides=["trainer.max_steps"])


def test_stage_config_routes_outputs_and_inputs(tmp_path: Path) -> None:
    chain = load_chain(CHAIN, out=tmp_path, overrides=["trainer.max_steps=3", "restoration.model.init_args.l2_weight=2"])
    config = stage_config(chain, chain.stages[3])
    assert config.trainer.max_steps == 3 and config.model.init_args.l2_weight == 2
    assert config.trainer.default_root_dir == str(tmp_path / "restoration")
    assert config.model.init_args.export_path == str(tmp_path / "restoration" / "restorer.safetensors")
    assert config.model.init_args.init_association_from == str(tmp_path / "association/checkpoints/final.ckpt")
    dirs = {c.init_args.dirpath for c in config.trainer.callbacks if "dirpath" in c.get("init_args", {})}
    assert dirs == {str(tmp_path / "restoration" / "checkpoints")}
    assert config.trainer.logger.init_args.save_dir == str(tmp_path / "restoration")
    # the per-stage override did not leak into another stage
    assert stage_config(chain, chain.stages[0]).model.init_args.get("l2_weight") is None



def test_command_line_overrides_beat_the_chain_files_per_stage_settings(tmp_path: Path) -> None:
    demo = REPO / "configs" / "demo" / "chain.yaml"
    # the demo chain sets trainer.max_steps per stage (2400, 500, 200, 2400) and degradation null for stage 1
    chain = load_chain(demo, out=tmp_path, overrides=["trainer.max_steps=50", "association.trainer.max_steps=7"])
    steps = {s.name: stage_config(chain, s).trainer.max_steps for s in chain.stages}
    assert steps == {"hq_codebook": 50, "lq_codebook": 50, "association": 7, "restoration": 50}
    # a command-line key that does not overlap the chain's per-stage settings leaves them in place
    chain = load_chain(demo, out=tmp_path, overrides=["data.init_args.batch_size=2"])
    first = stage_config(chain, chain.stages[0])
    assert first.data.init_args.batch_size == 2 and first.data.init_args.degradation is None
    assert first.trainer.max_steps == 2400
    # per-stage beats every-stage on the command line, whatever their order
    chain = load_chain(demo, out=tmp_path, overrides=["lq_codebook.trainer.max_steps=9", "trainer.max_steps=4"])
    assert stage_config(chain, chain.stages[1]).trainer.max_steps == 9
    assert stage_config(chain, chain.stages[0]).trainer.max_steps == 4

@pytest.mark.slow
def test_chain_resumes_a_killed_stage_and_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    _finish(_train(straight))
    manifest = json.loads((straight / "chain.json").read_text())
    assert list(manifest["stages"]) == ["hq_codebook", "lq_codebook", "association", "restoration"]
    for record in manifest["stages"].values():
        assert record["status"] == "finished" and len(record["checkpoint"]["sha256"]) == 64
        assert record["global_step"] == 6 and record["metrics"]
    assert manifest["stages"]["restoration"]["inputs"].keys() == {"hq_codebook", "association"}

    # kill the chain inside the association stage, once its first checkpoint (step 3) exists
    killed = tmp_path / "killed"
    proc = _train(killed)
    last = killed / "association" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = json.loads((killed / "chain.json").read_text())["stages"]
    assert state["association"]["status"] == "running", "the kill came too late to interrupt the association stage"
    assert "restoration" not in state

    text = _finish(_train(killed))
    assert "hq_codebook: finished before, skipped" in text and "lq_codebook: finished before, skipped" in text
    assert "association: resuming from" in text
    for name in ("association", "restoration"):
        a = torch.load(straight / name / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        b = torch.load(killed / name / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: resumed weights differ from the uninterrupted run"
    ra, rb = load_file(straight / "restoration" / "restorer.safetensors"), load_file(killed / "restoration" / "restorer.safetensors")
    assert all(torch.equal(ra[k], rb[k]) for k in ra)

    # a changed configuration of a finished stage is refused, --rerun trains it (and the later ones) again
    chain = load_chain(CHAIN, out=killed, overrides=[FIXED, *STEPS[1:], "trainer.max_steps=7"])
    with pytest.raises(ChainError, match="--rerun hq_codebook"):
        run_chain(chain, fit=lambda args: pytest.fail("nothing should train"))
    ran: list[str] = []
    chain = load_chain(CHAIN, out=killed, overrides=[FIXED, *STEPS])

    def fake_fit(args: list[str]) -> int:
        ran.append(Path(args[2]).parent.name)
        return 1

    with pytest.raises(ChainError, match="'restoration' failed"):
        run_chain(chain, rerun=["restoration"], fit=fake_fit, say=lambda _: None)
    assert ran == ["restoration"]
    assert list((killed / ".previous").glob("restoration-*")), "the replaced stage folder was not kept"


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("launcher", ["lightning", "torchrun"])
def test_chain_under_two_process_ddp(tmp_path: Path, launcher: str) -> None:
    """Lightning's launcher re-runs `daefr fit` per stage; torchrun runs `daefr train` on both ranks, and rank 1
    follows rank 0's decisions. Either way the four stages train on 2 processes and one manifest is written."""
    ddp = ("trainer.strategy={class_path: lightning.pytorch.strategies.DDPStrategy, init_args: "
           "{process_group_backend: gloo, timeout: '0:02:00', find_unused_parameters: true}}")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    args = ["train", str(CHAIN), "--out", str(out), FIXED, *STEPS, "trainer.devices=2", ddp]
    head = [sys.executable, "-m", "daefr"] if launcher == "lightning" else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "daefr"]
    proc = subprocess.Popen(head + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = _finish(proc)
    assert text.count("hq_codebook: training") == 1, text[-3000:]  # rank 1 prints nothing
    manifest = json.loads((out / "chain.json").read_text())
    assert [r["status"] for r in manifest["stages"].values()] == ["finished"] * 4
    assert manifest["stages"]["restoration"]["global_step"] == 6
    assert not list(out.glob("**/.*.tmp")), "a temporary file was left behind"
    state = torch.load(out / "restoration/checkpoints/final.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 6
