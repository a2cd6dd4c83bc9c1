"""benchmarks/gpu_check.py without a GPU: the clean refusal, the batch search, result writing, budget, dry runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of machines without CUDA")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _rows(out: Path, part: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [e for e in entries if e.get("part") == part and "note" not in e]


def test_refuses_without_cuda_in_one_line_and_runs_nothing(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out),
                           "--results", str(results)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device is present" in lines[0] and "nothing was run" in lines[0]
    assert not out.exists() and results.read_text() == "# Benchmark results\n"


def test_makefile_target_runs_the_script() -> None:
    proc = subprocess.run(["make", "-n", "gpu-check"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "benchmarks/gpu_check.py" in proc.stdout


def test_unknown_part_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--only", "train,bogus"])
    assert exc.value.code == 2 and "unknown part(s) bogus" in capsys.readouterr().err


def test_largest_batch_doubles_until_out_of_memory() -> None:
    tried: list[int] = []
    rows: list[dict[str, Any]] = []

    def attempt(batch: int) -> dict[str, Any]:
        tried.append(batch)
        if batch > 12:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"batch": batch, "step_s": 0.0}

    best = gpu_check.largest_batch(attempt, cap=64, budget=gpu_check.Budget(60), on_row=rows.append)
    assert best == 8 and tried == [1, 2, 4, 8, 16]
    assert rows[-1]["batch"] == 16 and rows[-1]["error"].startswith("out of memory")
    # the cap ends the search too
    tried.clear()
    assert gpu_check.largest_batch(attempt, cap=4, budget=gpu_check.Budget(60), on_row=rows.append) == 4
    assert tried == [1, 2, 4]


def test_largest_batch_stops_when_the_budget_is_spent() -> None:
    with pytest.raises(gpu_check.OutOfBudget):
        gpu_check.largest_batch(lambda b: {"batch": b}, cap=8, budget=gpu_check.Budget(-1), on_row=lambda r: None)


def test_cpu_dry_run_records_every_part_and_appends_to_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Data\n\nkeep me\n\n## GPU\n\nintro\n\n### earlier run\n\nold\n"
                       "\n## Inference\n\nkeep me too\n")
    out = tmp_path / "out"
    code = gpu_check.main(["--device", "cpu", "--only", "train,restore,degrade", "--stages", "restoration",
                           "--fake-max-batch", "2", "--out", str(out), "--results", str(results),
                           "--cache", str(tmp_path / "cache"), "--budget-s", "900"])
    assert code == 0
    train = _rows(out, "train")
    assert [r["batch"] for r in train] == [1, 2, 4]
    assert all(r["peak_mb"] > 0 and r["step_s"] > 0 and r["precision"] == "bf16-mixed" for r in train[:2])
    assert "out of memory" in train[2]["error"]
    restore = _rows(out, "restore")
    assert [(r["batch"], r["path"], r["precision"]) for r in restore][:4] == [
        (1, "parity", "fp32"), (1, "parity", "bf16"), (1, "fast", "fp32"), (1, "fast", "bf16")]
    assert restore[0]["max_dev"] == 0 and restore[0]["same_codes"] == 1.0
    assert 0 < restore[2]["max_dev"] < 1e-3  # the fast fp32 path: rounding-level deviation
    degrade = _rows(out, "degrade")
    assert {(r["blur"], r["jpeg"]) for r in degrade} == {("fft", "libjpeg"), ("fft", "kornia"),
                                                        ("kornia", "libjpeg"), ("kornia", "kornia")}
    assert all(r["ours"] > 0 and r["ref"] > 0 for r in degrade)
    text = results.read_text()
    assert text.count("## GPU") == 1 and "keep me\n" in text and "keep me too" in text
    assert text.index("### earlier run") < text.index("CPU dry run") < text.index("## Inference")
    assert (out / "gpu_check.md").read_text().startswith("### CPU dry run")


def test_a_spent_budget_still_leaves_the_figures_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = gpu_check.main(["--device", "cpu", "--only", "restore,degrade", "--out", str(out), "--no-results",
                           "--budget-s", "0"])
    assert code == 0
    md = (out / "gpu_check.md").read_text()
    assert md.count("skipped the rest: time budget spent") == 2
    assert (out / "results.jsonl").is_file()


@pytest.mark.ddp
def test_two_ranks_sharing_a_device_train_in_step(tmp_path: Path) -> None:
    """The shared-device DDP worker (gloo on the CPU here; NCCL on a GPU)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--ddp-shared-worker", "cpu",
                           "--ddp-steps", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "world size 2 on cpu: 2 steps, ranks agree" in proc.stdout
