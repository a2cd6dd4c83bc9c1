"""daefr.metrics: PSNR/SSIM/LPIPS/FID/NIQE/identity (Deg)/landmark (LMD) and the report writer.

Main entry points (imported on first use)::

    from daefr.metrics import MetricsConfig, evaluate_folders, write_run, write_comparison
    result = evaluate_folders("restored/", "gt/", "lq/", MetricsConfig(weights_dir="weights/"))
    write_run(result, "report/")          # per_image.csv, summary.json, report.html
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MetricsConfig": "daefr.metrics.suite:MetricsConfig",
    "EvaluationResult": "daefr.metrics.suite:EvaluationResult",
    "evaluate_folders": "daefr.metrics.suite:evaluate_folders",
    "write_run": "daefr.metrics.report:write_run",
    "write_comparison": "daefr.metrics.report:write_comparison",
    "evaluate_to_folder": "daefr.metrics.report:evaluate_to_folder",
    "read_run": "daefr.metrics.report:read_run",
    "psnr": "daefr.metrics.fidelity:psnr",
    "ssim": "daefr.metrics.fidelity:ssim",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'daefr.metrics' has no attribute {name!r}")


__all__ = list(_LAZY)
