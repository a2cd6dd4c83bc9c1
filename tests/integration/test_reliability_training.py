"""Issue 8: training survives interruption. SIGKILL at a random step + resume == uninterrupted run;
SIGTERM / SIGUSR1 save a checkpoint at the batch boundary and the job resumes from it exactly.

Everything runs the real ``daefr fit`` on ``configs/tiny/hq_codebook.yaml`` (CPU, deterministic) with
AtomicCheckpointIO and PreemptionCheckpoint. One subprocess is SIGKILLed; every other run happens in
one driver subprocess (several fits in a row, to pay the start-up once).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from daefr.config_files import load_composed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY_HQ = REPO / "configs" / "tiny" / "hq_codebook.yaml"  # composed over configs/tiny/base.yaml
TESTS = REPO / "tests"
STEPS = 5
# Shrunk further than the tiny config (16 px, one level): the point is the checkpoint logic, not the net.
SMALL_MODEL = {
    "encoder": {"name": "vqgan", "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "resolution": 16,
                "attn_resolutions": [], "z_channels": 8},
    "decoder": "${model.init_args.encoder}",
    "codebook": {"name": "vq", "n_embed": 16, "embed_dim": 8},
}


def _config(
    run: Path, *, save_every_step: bool, extra_callbacks: list[dict[str, Any]] = (), tag: str = "run"  # type: ignore[assignment]
) -> Path:
    """The tiny HQ-codebook config, writing into ``run`` and checkpointing every step."""
    cfg = cast("dict[str, Any]", OmegaConf.to_container(load_composed(TINY_HQ)))
    trainer = cfg["trainer"]
    trainer.update(max_steps=STEPS, default_root_dir=str(run), logger=False, limit_val_batches=0,
                   plugins=[{"class_path": "daefr.utils.checkpoint_io.AtomicCheckpointIO"}])
    trainer["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(run / "ckpt"), "filename": "{step}", "monitor": None,
                       "save_top_k": -1 if save_every_step else 1, "save_last": True, "every_n_train_steps": 1}},
        {"class_path": "daefr.stages.ResumeState"},
        *extra_callbacks,
        {"class_path": "daefr.stages.preemption.PreemptionCheckpoint"},
    ]
    # Data: two images (batch 2, so one batch per epoch) served in an order, with flips and noise drawn
    # from the global RNG (restored by ResumeState), so the test checks what a checkpoint carries besides
    # the data position (FaceDataModule's exact mid-epoch resume has its own test: test_data_resume.py).
    cfg["data"] = {"class_path": "daefr.testing.stages.ShuffledDataModule",
                   "init_args": {"n": 2, "image_size": 16, "batch_size": 2}}
    cfg["model"]["init_args"].update(SMALL_MODEL)
    cfg["model"]["init_args"]["loss"].update(disc_start=2, discriminator={"name": "patchgan", "ndf": 4, "n_layers": 1})
    run.mkdir(parents=True, exist_ok=True)
    path = run / f"config_{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


_DRIVER = r"""
import json, shutil, sys
from daefr.cli import main
codes = {}
for name, argv in json.loads(sys.argv[1]):
    if name == "copy":
        shutil.copy(*argv)
    else:
        codes[name] = main(argv)
print("CODES " + json.dumps(codes))
"""


def _signal_cb(step: int, name: str) -> dict[str, Any]:
    return {"class_path": "fixtures.training_signals.SignalAtStep", "init_args": {"step": step, "signal_name": name}}


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert a["global_step"] == b["global_step"], what
    sa, sb = a["state_dict"], b["state_dict"]
    assert list(sa) == list(sb), what
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{what}: {len(different)} tensors differ, e.g. {different[:3]}"
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pa, pb in zip(oa["state"].values(), ob["state"].values(), strict=True):
            assert all(torch.equal(pa[k], pb[k]) for k in ("exp_avg", "exp_avg_sq")), f"{what}: Adam moments"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reliability_training")
    kill_step = int(os.environ.get("DAEFR_TEST_KILL_STEP", random.SystemRandom().randint(2, STEPS - 1)))
    term_step, usr1_step = 2, 3
    # 1) a run SIGKILLed at a random step (its own process: nothing of it may survive but its files)
    killed = root / "killed"
    proc = subprocess.run(
        [sys.executable, "-m", "daefr", "fit", "--config",
         str(_config(killed, save_every_step=False, extra_callbacks=[_signal_cb(kill_step, "SIGKILL")]))],
        env=_env(), cwd=root, capture_output=True, text=True, timeout=600,
    )
    info: dict[str, Any] = {"root": root, "kill_step": kill_step, "term_step": term_step, "usr1_step": usr1_step,
                            "killed_rc": proc.returncode, "killed_err": proc.stderr[-3000:]}
    # 2) everything else in one driver process
    plan: list[tuple[str, list[str]]] = [
        ("reference", ["fit", "--config", str(_config(root / "reference", save_every_step=True))]),
        ("copy", [str(killed / "ckpt" / "last.ckpt"), str(killed / "at_kill.ckpt")]),
        ("resume_killed", ["fit", "--config", str(_config(killed, save_every_step=False, tag="resume")),
                           "--ckpt_path", str(killed / "ckpt" / "last.ckpt")]),
    ]
    for name, step in (("SIGTERM", term_step), ("SIGUSR1", usr1_step)):
        run = root / name.lower()
        plan += [
            (name, ["fit", "--config", str(_config(run, save_every_step=False, extra_callbacks=[_signal_cb(step, name)]))]),
            ("copy", [str(run / "ckpt" / "last.ckpt"), str(run / "preempted.ckpt")]),
            (f"resume_{name}", ["fit", "--config", str(_config(run, save_every_step=False, tag="resume")),
                                 "--ckpt_path", "last"]),
        ]
    driver = _DRIVER
    proc = subprocess.run([sys.executable, "-c", driver, json.dumps(plan)], env=_env(), cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CODES ")][-1]
    info["codes"] = json.loads(line[len("CODES "):])
    info["driver_err"] = proc.stderr[-4000:]
    return info


def test_sigkill_at_random_step_then_resume_equals_uninterrupted(runs: dict[str, Any]) -> None:
    root, k = runs["root"], runs["kill_step"]
    assert runs["killed_rc"] == -signal.SIGKILL, runs["killed_err"]
    killed_last = _load(root / "killed" / "at_kill.ckpt")
    # ModelCheckpoint runs after the killer in the same batch: the last complete save is step k-1
    assert killed_last["global_step"] == k - 1, f"kill step {k}"
    assert not [p for p in (root / "killed" / "ckpt").iterdir() if ".tmp" in p.name]  # no partial file
    # the killed run's last checkpoint equals the uninterrupted run's checkpoint of the same step
    _assert_same_weights(killed_last, _load(root / "reference" / "ckpt" / f"step={k - 1}.ckpt"),
                         f"checkpoint before SIGKILL at step {k}")
    assert runs["codes"]["reference"] == 0 and runs["codes"]["resume_killed"] == 0
    _assert_same_weights(_load(root / "killed" / "ckpt" / "last.ckpt"),
                         _load(root / "reference" / "ckpt" / "last.ckpt"),
                         f"resumed after SIGKILL at step {k} vs uninterrupted")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_signal_saves_checkpoint_and_resume_is_exact(runs: dict[str, Any], name: str) -> None:
    root, step = runs["root"], runs["term_step" if name == "SIGTERM" else "usr1_step"]
    run = root / name.lower()
    assert runs["codes"][name] == 0, runs["driver_err"]  # Lightning's clean stop
    saved = _load(run / "preempted.ckpt")
    assert saved["global_step"] == step  # saved at the end of the batch that received the signal
    _assert_same_weights(saved, _load(root / "reference" / "ckpt" / f"step={step}.ckpt"),
                         f"checkpoint saved on {name}")
    assert runs["codes"][f"resume_{name}"] == 0
    _assert_same_weights(_load(run / "ckpt" / "last.ckpt"), _load(root / "reference" / "ckpt" / "last.ckpt"),
                         f"resumed after {name} vs uninterrupted")
