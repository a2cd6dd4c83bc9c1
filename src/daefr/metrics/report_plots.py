"""Plots embedded in the evaluation reports as PNG data URIs (matplotlib, Agg canvas, no pyplot state).

matplotlib is optional (extra ``experiments``): :func:`plots_unavailable` gives the reason the plots
are skipped, and the reports say so instead of failing. Non-finite values (PSNR of a perfect image)
cannot be placed on an axis; they are left out and counted in the plot's title.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

A_COLOUR, B_COLOUR = "#4c72b0", "#dd8452"
BETTER, WORSE, TIE = "#0a7d22", "#b3261e", "#888888"


def plots_unavailable() -> str | None:
    """None when matplotlib can be imported, else the reason (for the report)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); install it with pip install 'daefr[experiments]'"
    return None


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _integer_counts(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _bins(count: int) -> int:
    return min(30, max(5, count // 3))


def _hist_range(values: Sequence[float]) -> tuple[float, float]:
    """The values' range, widened when it is too narrow for numpy's bins (all values equal up to rounding)."""
    lo, hi = min(values), max(values)
    if hi - lo > 1e-9 * max(abs(lo), abs(hi), 1.0):
        return lo, hi
    pad = max(abs(hi), 1.0) * 0.05
    return lo - pad, hi + pad


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _left_out(values: Sequence[float | None]) -> str:
    dropped = sum(1 for v in values if v is not None and not math.isnan(v) and math.isinf(v))
    return f", {dropped} infinite not shown" if dropped else ""


def histogram_uri(values: Sequence[float | None], label: str) -> str | None:
    """Histogram of one run's per-image values of a metric, with its mean; None without finite values."""
    finite = _finite(values)
    if not finite:
        return None
    fig = _figure(3.8, 2.7)
    ax = fig.add_subplot()
    ax.hist(finite, bins=_bins(len(finite)), range=_hist_range(finite), color=A_COLOUR, edgecolor="white")
    _integer_counts(ax)
    mean = math.fsum(finite) / len(finite)
    shown = " (of shown)" if len(finite) < sum(v is not None and not math.isnan(v) for v in values) else ""
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean{shown} {mean:.4g}")
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    ax.set_title(f"{label}: {len(finite)} images{_left_out(values)}", fontsize=10)
    ax.legend(fontsize=8)
    return _png_uri(fig)


def comparison_uri(a: Sequence[float | None], b: Sequence[float | None], label: str,
                   higher_is_better: bool) -> str | None:
    """Overlaid A/B histograms and an A-vs-B scatter (y = x line; green = B better) of paired values."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not pairs:
        return None
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    fig = _figure(8.4, 3.3)
    hist, scatter = fig.subplots(1, 2)
    lo, hi = _hist_range(xs + ys)
    span = hi - lo
    count = _bins(len(pairs))
    bins: Any = [lo + span * i / count for i in range(count + 1)]
    hist.hist(xs, bins=bins, histtype="step", linewidth=1.8, color=A_COLOUR, label="A")
    hist.hist(ys, bins=bins, histtype="step", linewidth=1.8, linestyle="--", color=B_COLOUR, label="B")
    _integer_counts(hist)
    hist.set_xlabel(label)
    hist.set_ylabel("images")
    hist.legend(fontsize=8)
    hist.set_title(f"{label} per image{_left_out(list(a) + list(b))}", fontsize=10)
    colours = [TIE if y == x else (BETTER if (y > x) == higher_is_better else WORSE) for x, y in pairs]
    scatter.scatter(xs, ys, c=colours, s=18, edgecolors="none")
    pad = span * 0.05
    scatter.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linewidth=0.8, linestyle="--")
    scatter.set_xlim(lo - pad, hi + pad)
    scatter.set_ylim(lo - pad, hi + pad)
    scatter.set_aspect("equal", adjustable="box")
    scatter.set_xlabel(f"A {label}")
    scatter.set_ylabel(f"B {label}")
    better = sum(c == BETTER for c in colours)
    scatter.set_title(f"B better on {better} of {len(pairs)} shown (green)", fontsize=10)
    return _png_uri(fig)
