"""``daefr experiment``: two variants of the tiny chain, one seed, evaluated on held-out faces, tracked in W&B offline."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from daefr.cli import main
from daefr.errors import ConfigError
from daefr.experiment import aggregate, load_experiment

REPO = Path(__file__).resolve().parents[2]
FIXED = {"class_path": "daefr.testing.stages.FixedBatchDataModule", "init_args": {"image_size": 32, "batch_size": 2}}


def _experiment(tmp_path: Path, wandb: bool) -> Path:
    spec = {
        "name": "tinyexp", "chain": str(REPO / "configs/tiny/chain.yaml"), "seeds": [0],
        "overrides": {"trainer.max_steps": 4, "trainer.val_check_interval": 4, "data": FIXED},
        "variants": [{"name": "ten", "overrides": {"restoration.model.init_args.l2_weight": 10.0}},
                     {"name": "one", "overrides": {"restoration.model.init_args.l2_weight": 1.0}}],
        "evaluation": {"hq": str(REPO / "src/daefr/assets/demo_faces/val"), "size": 32, "limit": 3,
                       "metrics": ["psnr", "ssim", "ids"]},
    }
    if wandb:
        spec["wandb"] = {"project": "daefr-test", "offline": True}
    path = tmp_path / "experiment.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_aggregate_mean_and_sample_spread() -> None:
    stats = aggregate({0: {"psnr": 20.0}, 1: {"psnr": 22.0}, 2: {"psnr": 24.0, "ssim": 0.5}})
    assert stats["psnr"]["mean"] == 22.0 and stats["psnr"]["std"] == 2.0
    assert stats["psnr"]["min"] == 20.0 and stats["psnr"]["n"] == 3
    assert stats["ssim"] == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1.0}


def test_experiment_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(json.dumps({"chain": str(REPO / "configs/tiny/chain.yaml"), "variants": [{"name": "a"}]}))
    with pytest.raises(ConfigError, match="evaluation.hq"):
        load_experiment(path)
    path.write_text(json.dumps({"chain": "nope.yaml", "variants": [{"name": "a"}], "evaluation": {"hq": "."}}))
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_experiment(path)


def _wandb_logs(root: Path) -> dict[str, bytes]:
    logs = {}
    for run in sorted(root.glob("**/wandb/offline-run-*")):
        log = next(run.glob("run-*.wandb"))
        deadline = time.monotonic() + 60.0  # W&B's service process writes the log on its own schedule
        data = log.read_bytes()
        while b"tinyexp/" not in data and time.monotonic() < deadline:
            time.sleep(0.5)
            data = log.read_bytes()
        logs[str(run.relative_to(root))] = data
    return logs


@pytest.mark.slow
def test_two_variant_experiment_with_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert main(["experiment", str(_experiment(tmp_path, wandb=True)), "--out", str(out)]) == 0

    report = (out / "report.md").read_text()
    assert "| ten |" in report and "| one |" in report and "| bicubic |" in report
    assert (out / "plots" / "metrics.svg").is_file()
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 6 and {r["variant"] for r in rows} == {"ten", "one"}
    summary = json.loads((out / "summary.json").read_text())
    for variant in ("ten", "one"):
        assert {"psnr", "ssim", "ids"} <= summary["table"][variant].keys()
        assert 0.0 < summary["table"][variant]["ids"]["mean"] <= 1.0
    assert summary["table"]["ten"]["psnr"] != summary["table"]["one"]["psnr"], "variants did not differ"

    # the variants differ only in the restoration stage: the second one reuses the first three stages
    manifest = json.loads((out / "one" / "seed0" / "chain.json").read_text())["stages"]
    for stage in ("hq_codebook", "lq_codebook", "association"):
        assert manifest[stage]["reused_from"] == str(out / "ten" / "seed0" / stage)
    assert "reused_from" not in manifest["restoration"]
    assert manifest["restoration"]["inputs"]["association"] == manifest["association"]["checkpoint"]["sha256"]

    logs = _wandb_logs(out)
    assert len(logs) == 7, sorted(logs)  # "ten": 4 stages + evaluation; "one": restoration + evaluation
    # the run logs are protobuf records written by W&B's Go service (no Python reader ships with wandb 0.2x+):
    # their strings are checked as bytes
    everything = b"".join(logs.values())
    for needle in (b"tinyexp/ten", b"tinyexp/one", b"hq_codebook", b"association", b"restoration",
                   b"evaluation", b"heldout/samples", b"tinyexp-ten-seed0-association", b"val/codes_in_use"):
        assert needle in everything, needle
    # the restoration stage's artifact records its inputs (the HQ codebook and association artifacts)
    restoration = next(v for k, v in logs.items() if k.startswith("ten/seed0/restoration"))
    assert b"tinyexp-ten-seed0-restoration" in restoration
    assert b"tinyexp-ten-seed0-hq_codebook" in restoration and b"tinyexp-ten-seed0-association" in restoration


def test_sweep_example_expands_to_a_valid_fit_command(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    sweep = yaml.safe_load((REPO / "configs/experiments/sweep_restoration.yaml").read_text())
    sampled = [f"--{key}={spec['values'][0] if 'values' in spec else spec['min']}"
               for key, spec in sweep["parameters"].items()]
    command = [part for part in sweep["command"] if part not in ("${program}", "${args}")]
    args = [REPO / a if a.startswith("configs/") else a for a in command]
    assert main([str(a) for a in args] + sampled + ["--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["l2_weight"] == 1.0
    assert printed["model"]["init_args"]["learning_rate"] == pytest.approx(1e-5)
    assert printed["trainer"]["logger"]["class_path"].endswith("WandbLogger")
