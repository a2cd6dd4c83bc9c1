"""Issue 8: ``daefr shard`` over the bad-input corpus: batch goes on, reasons, exit code, inputs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from daefr.cli import main
from daefr.data.sources import IMAGE_SUFFIXES
from fixtures.bad_files import expected_failures, make_bad_corpus, snapshot


def test_shard_bad_corpus(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, out = tmp_path / "corpus", tmp_path / "shards"
    # shard collects IMAGE_SUFFIXES only (no .gif): the corpus cases it sees
    cases = [c for c in make_bad_corpus(src) if c.path.suffix.lower() in IMAGE_SUFFIXES]
    assert len(cases) >= 20
    before = snapshot(src)
    code = main(["shard", str(src), str(out), "--min-size", "8", "--workers", "1", "--quiet", "--maxcount", "8"])
    assert code == 1  # some inputs failed
    manifest = json.loads((out / "manifest.json").read_text())
    works = {case.name for case in cases if case.works}
    assert manifest["total"] == len(works)
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    # every failing case (plus the other end of the symlink loop) is listed once, with a one-line reason
    assert len(skipped) == expected_failures(cases) + 1
    for case in cases:
        if not case.works:
            reason = next((r for f, r in skipped.items() if f.endswith(case.name)), None)
            assert reason is not None, case.name
            assert "\n" not in reason and case.reason in reason, (case.name, reason)
    err = capsys.readouterr().err
    assert f"{len(works)} of {len(works) + len(skipped)} images sharded, {len(skipped)} failed" in err
    assert snapshot(src) == before  # inputs unchanged
    # no partial or temporary output files
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name or p.name.startswith(".")]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tar") == sorted(s["name"] for s in manifest["shards"])
