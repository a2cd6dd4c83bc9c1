"""`daefr shard` and daefr.data.shards: round trip, bad files, limits, determinism, paired sets."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from daefr.cli import main
from daefr.data.shards import ShardOptions, write_shards
from daefr.data.sources import ShardSource
from daefr.errors import ConfigError
from data_helpers import BAD_FILES, make_image_folder, make_paired_folder


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shard_cli_writes_manifest_and_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = make_image_folder(tmp_path / "src")
    before = _tree_hashes(tmp_path / "src")
    code = main(["shard", str(tmp_path / "src"), str(tmp_path / "out"), "--maxcount", "5", "--workers", "2",
                 "--quiet"])
    assert code == 1  # some files were skipped
    captured = capsys.readouterr()
    assert f"wrote {len(expected)} samples in 3 shards" in captured.out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["total"] == len(expected)
    assert [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    assert {s["file"] for s in manifest["skipped"]} == set(BAD_FILES)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert "too small" in reasons["tiny.png"] and "directory" in reasons["folder.jpg"]
    assert "loop" in reasons["loop.png"]
    assert "empty" in reasons["empty.jpg"] and "truncated" in reasons["truncated.png"]
    assert all("\n" not in r for r in reasons.values())
    for entry in manifest["skipped"]:
        assert entry["file"] in captured.err
    for shard in manifest["shards"]:
        path = tmp_path / "out" / shard["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        assert path.stat().st_size == shard["bytes"]
    assert _tree_hashes(tmp_path / "src") == before  # inputs untouched
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary files left


def test_shard_contents_are_lossless_with_key_and_metadata(tmp_path: Path) -> None:
    expected = make_image_folder(tmp_path / "src", bad=False)
    write_shards(tmp_path / "src", tmp_path / "out", ShardOptions(maxcount=100))
    source = ShardSource(str(tmp_path / "out"))
    samples = [s for unit in source.units() for s in source.read(unit)]
    assert sorted(k for k, _ in samples) == sorted(expected)
    from daefr.data.decode import decode_rgb

    for key, fields in samples:
        assert set(fields) == {"png", "json"}
        meta = json.loads(fields["json"])
        assert meta["key"] == key and meta["width"] == 32
        np.testing.assert_array_equal(np.asarray(decode_rgb(fields["png"])), expected[key])


def test_resharding_is_byte_identical_and_removes_stale_shards(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "src")
    opts = ShardOptions(size=24, maxcount=3, workers=2)
    write_shards(tmp_path / "src", tmp_path / "a", opts)
    write_shards(tmp_path / "src", tmp_path / "b", ShardOptions(size=24, maxcount=3, workers=1))
    first = _tree_hashes(tmp_path / "a")
    assert first == _tree_hashes(tmp_path / "b")  # worker count does not change the bytes
    write_shards(tmp_path / "src", tmp_path / "a", opts)
    assert _tree_hashes(tmp_path / "a") == first
    write_shards(tmp_path / "src", tmp_path / "a", ShardOptions(size=24, maxcount=100))
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == ["shard-000000.tar"]


def test_maxsize_limits_shard_bytes_and_resize_crops(tmp_path: Path) -> None:
    from PIL import Image

    make_image_folder(tmp_path / "src", bad=False)
    Image.new("RGB", (60, 40), (200, 10, 10)).save(tmp_path / "src" / "wide.png")
    manifest = write_shards(tmp_path / "src", tmp_path / "out", ShardOptions(size=16, maxsize=12000))
    assert len(manifest["shards"]) > 1
    assert all(s["bytes"] <= 12000 for s in manifest["shards"])
    source = ShardSource(str(tmp_path / "out" / manifest["pattern"]))
    assert len(source.units()) == len(manifest["shards"])
    samples = dict(s for unit in source.units() for s in source.read(unit))
    meta = json.loads(samples["wide"]["json"])
    assert (meta["orig_width"], meta["orig_height"], meta["width"], meta["height"]) == (60, 40, 16, 16)


def test_store_source_keeps_original_bytes(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "src", bad=False, n_good=3)
    write_shards(tmp_path / "src", tmp_path / "out", ShardOptions(store="source"))
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        data = tar.extractfile("face000.png").read()  # type: ignore[union-attr]
    assert data == (tmp_path / "src" / "face000.png").read_bytes()
    with pytest.raises(ConfigError, match="cannot resize"):
        write_shards(tmp_path / "src", tmp_path / "out2", ShardOptions(store="source", size=16))


def test_list_file_and_paired_folder(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "src", bad=False, n_good=4)
    (tmp_path / "src" / "list.txt").write_text("face000.png\n# comment\nface002.png\nmissing.png\n")
    manifest = write_shards(tmp_path / "src" / "list.txt", tmp_path / "out")
    assert manifest["total"] == 2
    assert [s["file"] for s in manifest["skipped"]] == ["missing.png"]

    pairs = make_paired_folder(tmp_path / "pairs", n=3)
    (tmp_path / "pairs" / "lq" / "orphan.png").write_bytes((tmp_path / "pairs" / "lq" / "p00.png").read_bytes())
    manifest = write_shards(tmp_path / "pairs", tmp_path / "pout")
    assert manifest["paired"] and manifest["total"] == 3
    assert manifest["skipped"] == [{"file": "lq/orphan.png", "reason": "no GT image with this name"}]
    source = ShardSource(str(tmp_path / "pout"))
    assert source.paired
    from daefr.data.decode import decode_rgb

    for key, fields in (s for unit in source.units() for s in source.read(unit)):
        lq, gt = pairs[key]
        np.testing.assert_array_equal(np.asarray(decode_rgb(fields["lq.png"])), lq)
        np.testing.assert_array_equal(np.asarray(decode_rgb(fields["hq.png"])), gt)


def test_shard_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shard", str(tmp_path / "nope"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("daefr shard: error:") and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert main(["shard", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1


def test_shard_bad_input_corpus_every_file_sharded_or_reported(tmp_path: Path) -> None:
    from fixtures.bad_files import make_bad_corpus, snapshot

    cases = make_bad_corpus(tmp_path / "corpus")
    before = snapshot(tmp_path / "corpus")
    manifest = write_shards(tmp_path / "corpus", tmp_path / "out", ShardOptions(min_size=8, workers=2))
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    for case in cases:
        name = case.path.relative_to(tmp_path / "corpus").as_posix()
        if case.works:
            assert name not in skipped, f"{name} should have been sharded: {skipped.get(name)}"
        else:
            assert name in skipped and case.reason in skipped[name], (name, skipped.get(name))
    assert manifest["total"] == sum(case.works for case in cases)
    assert all("\n" not in reason for reason in skipped.values())
    assert snapshot(tmp_path / "corpus") == before  # inputs unchanged
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "shard-000000.tar"]
