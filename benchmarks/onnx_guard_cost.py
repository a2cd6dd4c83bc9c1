"""Cost of checking an ONNX file before ONNX Runtime opens it (``daefr.interop.onnx_guard.check_onnx_file``).

Writes one ONNX model holding a float32 initializer of ``--mb`` MB, then, each in a fresh process,
measures wall time and the peak resident memory above the process's start for (a) the check and
(b) ONNX Runtime's own session creation (CPU), which every ONNX load pays anyway.

Usage: ``.venv/bin/python benchmarks/onnx_guard_cost.py --mb 400``

Measured (2026-12-07, x86_64, 2 shared CPU cores at load average 4.7, onnx 1.23.2, onnxruntime 1.32.0),
400 MB file: check 2.6 s, peak 775 MB above the start; ONNX Runtime session 2.4 s, peak 1153 MB. The
check about doubles the time to open an ONNX file and stays below the session's own peak (it runs first
and hands its memory back), so the process's peak is unchanged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = """
import json, sys, time
from daefr.interop.export import release_freed_heap  # torch and onnx imported before the baseline
import onnxruntime as ort
from daefr.interop.onnx_guard import check_onnx_file
def hwm_kb():  # this process's peak resident memory (VmHWM; unlike ru_maxrss, not inherited over exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
before = hwm_kb()
start = time.perf_counter()
if sys.argv[1] == "guard":
    check_onnx_file(sys.argv[2])
else:
    ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
seconds = time.perf_counter() - start
peak = (hwm_kb() - before) / 1024
print(json.dumps({"what": sys.argv[1], "seconds": round(seconds, 2), "peak_mb_above_start": round(peak)}))
"""


def _write_model(path: Path, mb: int) -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    n = mb * 1_000_000 // 4
    weight = numpy_helper.from_array(np.random.default_rng(0).random(n, dtype=np.float32).reshape(1, n), "w")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["out"])], "g", [],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, n])], initializer=[weight])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                       ir_version=8).SerializeToString())


def main() -> None:
    """Print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="initializer size in MB (default 400)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.onnx"
        _write_model(path, args.mb)
        print(json.dumps({"file_mb": round(path.stat().st_size / 1e6)}))
        for what in ("guard", "session"):
            out = subprocess.run([sys.executable, "-c", _MEASURE, what, str(path)], check=True, capture_output=True,
                                 text=True).stdout
            print(out.strip())


if __name__ == "__main__":
    main()
