"""benchmarks/training.py: options switch what they say, a tiny measurement runs, the table's ratios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import training  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_options_switch_checkpointing_layout_adam_and_zero_grad(tmp_path: Path) -> None:
    stage = training.build_stage("codebook", "tiny", tmp_path)
    original = torch.optim.Optimizer.zero_grad
    undo = training.apply_options(stage, ["checkpointing", "channels_last", "fused_adam", "grads_kept"])
    try:
        assert stage.vqgan.encoder.checkpointing and stage.vqgan.decoder.checkpointing
        assert stage.vqgan.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        opt = stage.make_adam(stage.vqgan.parameters(), 1e-4)
        assert opt.defaults["fused"] is True
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.ones(2)
        sgd = torch.optim.SGD([p], lr=0.1)
        sgd.zero_grad(set_to_none=True)
        assert p.grad is not None and torch.equal(p.grad, torch.zeros(2))  # kept, zeroed
    finally:
        for fn in undo:
            fn()
    assert torch.optim.Optimizer.zero_grad is original
    with pytest.raises(ValueError, match="unknown option"):
        training.apply_options(stage, ["turbo"])


def test_measure_runs_a_tiny_stage(tmp_path: Path) -> None:
    cfg = {"stage": "restoration", "arch": "tiny", "batch": 2, "steps": 2, "warmup": 1, "precision": "32-true",
           "device": "cpu", "options": ["checkpointing"], "cache": str(tmp_path)}
    row = training.measure(cfg)
    assert len(row["steps_s"]) == 2 and row["step_s"] > 0 and row["cpu_s"] > 0
    assert row["images_per_s"] == pytest.approx(2 / row["step_s"])
    assert row["peak_kind"] == "VmHWM" and row["peak_mb"] > 0 and row["nonfinite_steps"] == 0
    assert "cache" not in row


def test_table_ratios_against_base() -> None:
    def row(opts: list[str], batch: int, step: float, peak: float) -> dict:
        return {"arch": "full", "stage": "codebook", "batch": batch, "options": opts, "precision": "32-true",
                "step_s": step, "cpu_s": 2 * step, "images_per_s": batch / step, "peak_mb": peak}

    rows = [row(["base"], 1, 10.0, 8000), row(["base"], 2, 20.0, 14000), row(["checkpointing"], 1, 13.0, 6000),
            row(["checkpointing"], 2, 26.0, 8000), {**row(["grads_kept"], 1, 1.0, 1.0), "error": "exit 1: boom"}]
    lines = training.table(rows)
    assert "| 0 | full | codebook | 2 | base | 32-true | 20.000 | 40.000 | 0.10 | 14000 | 6000 |  |  |  |" in lines
    assert "| 0 | full | codebook | 1 | checkpointing | 32-true | 13.000 | 26.000 | 0.08 | 6000 |  | 1.30x | 1.30x | 0.75x |" \
        in lines
    assert "| 0 | full | codebook | 2 | checkpointing | 32-true | 26.000 | 52.000 | 0.08 | 8000 | 2000 | 1.30x | 1.30x | " \
        "0.57x |" in lines
    assert any("failed: exit 1: boom" in line for line in lines)
    # another run's rows are not compared with this run's base
    other = training.table([{**r, "run": 2} for r in rows[2:4]] + rows[:2])
    assert "| 2 | full | codebook | 1 | checkpointing | 32-true | 13.000 | 26.000 | 0.08 | 6000 |  |  |  |  |" in other
