"""`daefr fit` as users meet it: outputs under --trainer.default_root_dir, no known noise, a final line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_fit_writes_under_the_root_dir_and_says_where(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "daefr", "fit", "--config", "configs/tiny/hq_codebook.yaml",
         "--trainer.max_steps", "5", "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "logs").is_dir()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1] == f"daefr fit: done; checkpoints in {run}/checkpoints (last: {run}/checkpoints/last.ckpt)"
    for noise in ("Tip:", "LeafSpec", "manual optimization", "Traceback"):
        assert noise not in output, (noise, output)
