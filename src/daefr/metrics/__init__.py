"""daefr.metrics: PSNR/SSIM/LPIPS/FID/NIQE/identity (Deg)/landmark (LMD) and the report writer.

Main entry points (imported on first use)::

    from daefr.metrics import MetricsConfig, evaluate_folders, write_run, write_comparison
    result = evaluate_folders("restored/", "gt/", "lq/", MetricsConfig(weights_dir="weights/"))
    write_run(result, "report/")          # per_image.csv, summary.json, report.html
"""

from __future__ import annotations

from daefr.utils.lazy import lazy_getattr

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


__getattr__ = lazy_getattr("daefr.metrics", _LAZY)


__all__ = list(_LAZY)
