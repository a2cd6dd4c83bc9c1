"""Batch helper: a failed item does not stop the batch (daefr.utils.batch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daefr.errors import ImageReadError
from daefr.utils.batch import BatchFailure, BatchSummary, BatchTracker, run_batch


def _process(x: int) -> int:
    if x == 2:
        raise ImageReadError("two.png: empty file (0 bytes)")
    if x == 4:
        raise ValueError("bad value\nsecond line")
    return x * 10


def test_run_batch_goes_on_and_summarises(tmp_path: Path) -> None:
    seen: list[tuple[int, str]] = []
    result = run_batch(range(6), _process, on_failure=lambda item, reason: seen.append((item, reason)))
    assert result.results == [0, 10, 30, 50]
    summary = result.summary
    assert (summary.ok, summary.failed, summary.total, summary.exit_code) == (4, 2, 6, 1)
    assert summary.failures == (
        BatchFailure("2", "two.png: empty file (0 bytes)"),
        BatchFailure("4", "ValueError: bad value"),
    )
    assert seen == [(2, "two.png: empty file (0 bytes)"), (4, "ValueError: bad value")]
    report = summary.report("restored")
    assert report.splitlines()[0].startswith("4 of 6 restored, 2 failed in ")
    assert "  FAILED 4: ValueError: bad value" in report.splitlines()
    written = json.loads(summary.write_json(tmp_path / "summary.json").read_text())
    assert written["ok"] == 4 and written["failed"] == 2 and written["failures"][0]["item"] == "2"


def test_all_ok_exit_zero_and_fail_fast() -> None:
    assert run_batch([1, 3], _process).summary.exit_code == 0
    assert BatchSummary(ok=0).exit_code == 0
    with pytest.raises(ImageReadError):
        run_batch([1, 2, 3], _process, fail_fast=True)


def test_tracker_context_and_interrupts_propagate() -> None:
    tracker = BatchTracker()
    for item in (Path("a.png"), Path("b.png")):
        with tracker.item(item):
            if item.name == "b.png":
                raise OSError(5, "Input/output error")
    tracker.failed("c.png", "reason with\nnewline")
    summary = tracker.summary()
    assert summary.ok == 1
    assert [f.item for f in summary.failures] == ["b.png", "c.png"]
    assert summary.failures[0].reason == "OSError: Input/output error"
    assert summary.failures[1].reason == "reason with newline"
    assert summary.seconds >= 0
    with pytest.raises(KeyboardInterrupt), tracker.item("d"):
        raise KeyboardInterrupt
    assert tracker.summary().failed == 2
