"""Issue 8: configuration errors give one clear line (what is wrong + the fix), exit code 1, no traceback.

All cases run ``daefr fit`` on variants of ``configs/tiny/hq_codebook.yaml`` in one subprocess (so the
Lightning/torch global state they set stays out of the test process).
"""

from __future__ import annotations

import copy
import json
import os
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

_DRIVER = r"""
import contextlib, io, json, sys
from daefr.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException as exc:  # a traceback would escape to the user: record it as such
            code = "uncaught " + type(exc).__name__ + ": " + str(exc)[:300]
    lines = [l for l in err.getvalue().splitlines() if "daefr fit: error:" in l or "Traceback" in l]
    results[name] = {"code": code, "errors": lines}
print("RESULTS " + json.dumps(results))
"""


def _base(tmp: Path) -> dict[str, Any]:
    # composed: the variants are written to tmp, where its `base: base.yaml` would not be found
    cfg = cast("dict[str, Any]", OmegaConf.to_container(load_composed(TINY_HQ)))
    cfg["trainer"].update(max_steps=1, default_root_dir=str(tmp / "run"), logger=False, limit_val_batches=0,
                          deterministic=False, callbacks=None)
    for split in ("train", "val"):
        cfg["data"]["init_args"][split] = str(REPO / cfg["data"]["init_args"][split])
    return cfg


# name -> (how to break the config, extra CLI args, substrings the one error line must contain)
CASES: dict[str, tuple[Any, list[str], list[str]]] = {
    "unknown_trainer_key": (lambda c: c["trainer"].update(max_stepz=3), [],
                            ["does not accept option 'trainer.max_stepz'", "daefr fit --help"]),
    "unknown_stage_argument": (lambda c: c["model"]["init_args"].update(learning_rat=1e-3), [],
                               ["'learning_rat' is not accepted", "did you mean 'learning_rate'"]),
    "unknown_component_argument": (lambda c: c["model"]["init_args"]["encoder"].update(chh=32), [],
                                   ["unknown argument 'chh'", "Did you mean 'ch'"]),
    "unknown_component": (lambda c: c["model"]["init_args"]["codebook"].update(name="vqq"), [],
                          ["no component 'vqq' in group 'codebooks'", "Did you mean 'vq'"]),
    "wrong_type_stage": (lambda c: c["model"]["init_args"].update(learning_rate="fast"), [],
                         ['"learning_rate"', "Expected a <class 'float'>", "fast"]),
    "wrong_type_trainer": (lambda c: c["trainer"].update(max_steps="ten"), [],
                           ['"trainer.max_steps"', "Expected a <class 'int'>"]),
    "missing_weights_file": (
        lambda c: c["model"]["init_args"]["loss"].update(
            perceptual_weight=1.0, perceptual={"name": "lpips", "weights_path": "/nonexistent/lpips_vgg.pth"}),
        [], ["/nonexistent/lpips_vgg.pth", "not found", "Download"]),
    "missing_init_checkpoint": (lambda c: c["model"]["init_args"].update(init_from="/nonexistent/hq.ckpt"), [],
                                ["/nonexistent/hq.ckpt", "not found"]),
    "incompatible_init_checkpoint": (lambda c: c["model"]["init_args"].update(init_from="{other}"), [],
                                     ["other_arch.ckpt", "other shapes", "architecture"]),
    "incompatible_resume_checkpoint": (lambda c: None, ["--ckpt_path", "{other}"],
                                       ["other_arch.ckpt", "does not fit this CodebookStage", "missing keys"]),
    "truncated_resume_checkpoint": (lambda c: None, ["--ckpt_path", "{truncated}"],
                                    ["truncated.ckpt", "truncated or corrupt"]),
    # issue 15: a checkpoint's hyper-parameters are data; they never import a class path
    "hostile_hyper_parameters": (lambda c: None, ["--ckpt_path", "{evil}"],
                                 ["evil.ckpt (hyper_parameters)", "refused", "os.system"]),
    "not_a_checkpoint_safetensors": (lambda c: None, ["--ckpt_path", "{fake_st}"],
                                     ["fake.safetensors", "cannot load checkpoint"]),
    "negative_steps": (lambda c: c["trainer"].update(max_steps=-5), [],
                       ["trainer.max_steps is -5", "must be >= 0 (or -1 for no limit)"]),
    "negative_batch_size": (lambda c: c["data"]["init_args"].update(batch_size=-2), [],
                            ["data.init_args.batch_size is -2", "must be >= 1"]),
    "nan_learning_rate": (lambda c: c["model"]["init_args"].update(learning_rate=float("nan")), [],
                          ["model.init_args.learning_rate is nan", "finite"]),
    "unset_env_interpolation": (lambda c: c["trainer"].update(default_root_dir="${oc.env:DAEFR_TEST_UNSET_VAR}"), [],
                                ["DAEFR_TEST_UNSET_VAR", "trainer.default_root_dir", "set the environment variable"]),
    "missing_interpolation_key": (lambda c: c["trainer"].update(default_root_dir="${nothere.key}"), [],
                                  ["'nothere.key' not found", "trainer.default_root_dir"]),
    "empty_config": (lambda c: c.clear(), [], ["is empty", "configs/tiny/hq_codebook.yaml"]),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("config_errors")
    other = tmp / "other_arch.ckpt"  # a checkpoint of another architecture (narrower encoder)
    torch.save({"state_dict": {"vqgan.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, "epoch": 0,
                "global_step": 0, "pytorch-lightning_version": "2.6.6", "loops": {}}, other)
    truncated = tmp / "truncated.ckpt"
    truncated.write_bytes(other.read_bytes()[:200])
    marker = tmp / "ran.marker"
    evil = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.6", "loops": {},
                "hyper_parameters": {"encoder": {"class_path": "os.system",
                                                 "init_args": {"command": f"touch {marker}"}}}}, evil)
    fake_st = tmp / "fake.safetensors"
    fake_st.write_text("not a safetensors file")
    subst = {"{other}": str(other), "{truncated}": str(truncated), "{evil}": str(evil), "{fake_st}": str(fake_st)}
    plan = []
    for name, (mutate, extra, _) in CASES.items():
        cfg = copy.deepcopy(_base(tmp))
        mutate(cfg)
        text = yaml.safe_dump(cfg) if cfg else ""
        for key, value in subst.items():
            text = text.replace(key, value)
        path = tmp / f"{name}.yaml"
        path.write_text(text)
        plan.append((name, ["fit", "--config", str(path), *[subst.get(a, a) for a in extra]]))
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(plan)], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    outcome: dict[str, Any] = json.loads(line[len("RESULTS "):])
    outcome["_marker_appeared"] = marker.exists()
    return outcome


def test_hostile_checkpoint_ran_nothing(results: dict[str, Any]) -> None:
    assert results["_marker_appeared"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_config_error_is_one_clear_line(results: dict[str, Any], name: str) -> None:
    outcome = results[name]
    assert outcome["code"] == 1, outcome
    assert len(outcome["errors"]) == 1, outcome  # exactly one error line, no traceback
    message = outcome["errors"][0]
    assert message.startswith("daefr fit: error: ")
    for needle in CASES[name][2]:
        assert needle in message, (needle, message)
    assert len(message) < 600, message


def test_ckpt_path_last_without_checkpoint_says_starting_from_scratch_and_orphans_go(tmp_path: Path) -> None:
    cfg = _base(tmp_path)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    orphan = tmp_path / "run" / "checkpoints" / ".last.ckpt.abcd1234.tmp"  # a save killed mid-write
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from daefr.cli import main; sys.exit(main(sys.argv[1:]))",
         "fit", "--config", str(path), "--ckpt_path", "last"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loud = [line for line in proc.stderr.splitlines() if "STARTING FROM SCRATCH" in line]
    assert len(loud) == 1 and "--ckpt_path last: no last checkpoint in" in loud[0], proc.stderr[-2000:]
    assert str(tmp_path / "run") in loud[0]
    assert not orphan.exists() and f"removed {orphan}" in proc.stderr
