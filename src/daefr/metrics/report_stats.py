"""Numbers the reports show beside the means: sample standard deviation and per-image win counts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """``n`` values, their mean and sample standard deviation (``None``: no values / undefined)."""

    n: int
    mean: float | None
    std: float | None


def spread(values: Iterable[float | None]) -> Spread:
    """Mean and sample std (ddof 1) of the values that are not None/NaN.

    The std is ``None`` for fewer than two values or when a value is infinite (PSNR of a perfect
    image): it is undefined then, and the mean is +-inf.
    """
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return Spread(0, None, None)
    if any(math.isinf(v) for v in kept):
        total = sum(kept)  # inf, -inf or nan (both signs)
        return Spread(len(kept), None if math.isnan(total) else total, None)
    mean = math.fsum(kept) / len(kept)
    if len(kept) < 2:
        return Spread(1, mean, None)
    var = math.fsum((v - mean) ** 2 for v in kept) / (len(kept) - 1)
    return Spread(len(kept), mean, math.sqrt(var))


@dataclass(frozen=True)
class Wins:
    """Per-image comparison of run B against run A on one metric."""

    b_better: int
    a_better: int
    ties: int

    @property
    def compared(self) -> int:
        """Images with a value in both runs."""
        return self.b_better + self.a_better + self.ties

    def as_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return {"b_better": self.b_better, "a_better": self.a_better, "ties": self.ties, "compared": self.compared}


def win_counts(pairs: Sequence[tuple[float | None, float | None]], higher_is_better: bool) -> Wins:
    """Count (a, b) pairs where B is better, A is better, or both are equal (inf == inf is a tie).

    Pairs with a missing or NaN value on either side are not counted.
    """
    b_better = a_better = ties = 0
    for a, b in pairs:
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            continue
        if a == b:
            ties += 1
        elif (b > a) == higher_is_better:
            b_better += 1
        else:
            a_better += 1
    return Wins(b_better, a_better, ties)
