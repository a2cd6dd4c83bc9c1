"""Process many items where a failed item does not stop the batch; summarise and give an exit code.

Two ways to use it::

    summary = run_batch(paths, restore_one)            # map a function over items

    tracker = BatchTracker()                           # or track a custom loop
    for path in paths:
        with tracker.item(path):
            restore_one(path)
    summary = tracker.summary()
    print(summary.report()); return summary.exit_code

Each failure is kept as ``(item, one-line reason)``. ``KeyboardInterrupt`` and ``SystemExit`` are never
swallowed; other exceptions are recorded (``fail_fast=True`` re-raises the first one instead).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from daefr.utils.io import atomic_write_text
from daefr.utils.reasons import one_line_reason

__all__ = ["BatchFailure", "BatchResult", "BatchSummary", "BatchTracker", "run_batch"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchFailure:
    """One failed item and the one-line reason."""

    item: str
    reason: str


@dataclass(frozen=True)
class BatchSummary:
    """Outcome of a batch: successes, failures (item, reason) and wall time in seconds."""

    ok: int
    failures: tuple[BatchFailure, ...] = ()
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Number of failed items."""
        return len(self.failures)

    @property
    def total(self) -> int:
        """Number of items processed (ok + failed)."""
        return self.ok + self.failed

    @property
    def exit_code(self) -> int:
        """0 when no item failed, 1 when any failed."""
        return 0 if self.failed == 0 else 1

    def report(self, verb: str = "processed") -> str:
        """Human summary: a count line, then one ``FAILED item: reason`` line per failure."""
        lines = [f"{self.ok} of {self.total} {verb}, {self.failed} failed in {self.seconds:.1f} s"]
        lines += [f"  FAILED {f.item}: {f.reason}" for f in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ok, failed, total, seconds, failures as {item, reason})."""
        return {
            "ok": self.ok,
            "failed": self.failed,
            "total": self.total,
            "seconds": round(self.seconds, 3),
            "failures": [{"item": f.item, "reason": f.reason} for f in self.failures],
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


@dataclass
class BatchTracker:
    """Collects per-item outcomes of a loop; :meth:`item` records an exception instead of raising it."""

    fail_fast: bool = False
    ok: int = 0
    failures: list[BatchFailure] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def succeeded(self, item: object) -> None:
        """Record one successful item."""
        self.ok += 1

    def failed(self, item: object, reason: BaseException | str) -> None:
        """Record one failed item with an exception or a reason (reduced to one line)."""
        text = one_line_reason(reason) if isinstance(reason, BaseException) else " ".join(str(reason).split())
        self.failures.append(BatchFailure(os.fspath(item) if isinstance(item, os.PathLike) else str(item), text))

    @contextlib.contextmanager
    def item(self, item: object) -> Iterator[None]:
        """Run the body for one item: success is counted, an ``Exception`` is recorded and swallowed."""
        try:
            yield
        except Exception as exc:
            self.failed(item, exc)
            if self.fail_fast:
                raise
        else:
            self.succeeded(item)

    def summary(self) -> BatchSummary:
        """Snapshot of the counts so far, with the time since the tracker was created."""
        return BatchSummary(self.ok, tuple(self.failures), time.perf_counter() - self.started)


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    """Results of :func:`run_batch`: outputs of the items that worked (in order) and the summary."""

    results: list[R]
    summary: BatchSummary


def run_batch(
    items: Iterable[T],
    process: Callable[[T], R],
    *,
    fail_fast: bool = False,
    on_failure: Callable[[T, str], None] | None = None,
) -> BatchResult[R]:
    """Apply ``process`` to each item; failures are recorded (and passed to ``on_failure``), not raised."""
    tracker = BatchTracker(fail_fast=fail_fast)
    results: list[R] = []
    for entry in items:
        before = len(tracker.failures)
        with tracker.item(entry):
            results.append(process(entry))
        if on_failure is not None and len(tracker.failures) > before:
            on_failure(entry, tracker.failures[-1].reason)
    return BatchResult(results, tracker.summary())
