"""Issue 8: ``daefr restore --aligned`` over the bad-input corpus: every file is restored or gets a one-line
reason, the batch goes on, the summary counts and exit code say so, inputs are unchanged, and no partial or
temporary output files are left. The network is a stand-in (identity); it is tested elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from daefr.cli import main
from fixtures.bad_files import expected_failures, make_bad_corpus, snapshot


class _Identity(nn.Module):
    input_size = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def test_restore_aligned_bad_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daefr.interop.restorer_io as restorer_io

    monkeypatch.setattr(restorer_io, "load_restorer", lambda path, **kw: _Identity())
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"unused: load_restorer is replaced")
    src, out = tmp_path / "corpus", tmp_path / "out"
    cases = make_bad_corpus(src)
    before = snapshot(src)
    code = main(["restore", str(src), "-o", str(out), "-w", str(weights), "--aligned", "--device", "cpu",
                 "--no-progress", "--summary-json", str(tmp_path / "summary.json")])
    summary = json.loads((tmp_path / "summary.json").read_text())
    works = [case for case in cases if case.works]
    assert code == 1
    assert summary["ok"] == len(works)
    assert summary["failed"] == expected_failures(cases) + 1  # + loop_b.png, the other end of the loop
    reasons = {Path(f["item"]).name: f["reason"] for f in summary["failures"]}
    for case in cases:
        if not case.works:
            assert case.name in reasons, case.name
            assert "\n" not in reasons[case.name] and case.reason in reasons[case.name], (case.name, reasons)
    assert snapshot(src) == before  # inputs unchanged
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if ".tmp" in p.name or p.name.startswith(".")]  # no partial files
    restored = {p.stem for p in (out / "restored_faces").iterdir()}
    assert len(restored) == len(works)
