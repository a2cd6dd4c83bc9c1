"""Issue 8: ``daefr shard`` over the bad-input corpus: batch goes on, reasons, exit code, inputs unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


# ----- issue 15: `daefr shard` never deletes what it did not write; bad bare shards never kill training
def _hashes(root: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _faces(root: Path, n: int = 4) -> Path:
    from data_helpers import make_image_folder

    make_image_folder(root, n_good=n, bad=False)
    return root


@pytest.mark.parametrize("marker", ["daefr-shards/1", "something-else"])
def test_shard_never_deletes_files_a_manifest_names(tmp_path: Path, capsys, marker: str) -> None:  # type: ignore[no-untyped-def]
    src, out = _faces(tmp_path / "src"), tmp_path / "out"
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "precious.tar").write_bytes(b"keep me")
    (victims / "photo.jpg").write_bytes(b"keep me too")
    out.mkdir()
    (out / "shard-000007.tar").symlink_to(victims / "photo.jpg")  # a listed name that is a link out
    (out / "notes.txt").write_text("user file")
    names = [str(victims / "precious.tar"), "../victims/photo.jpg", "sub/../../victims/precious.tar",
             "shard-000007.tar", "notes.txt", "/etc/hostname"]
    (out / "manifest.json").write_text(json.dumps({"format": marker, "shards": [{"name": n} for n in names]}))
    before = _hashes(victims)
    code = main(["shard", str(src), str(out), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert _hashes(victims) == before  # nothing outside the output folder was touched
    assert (out / "notes.txt").read_text() == "user file"
    assert (out / "shard-000007.tar").is_symlink()  # links are never followed nor removed
    if marker == "daefr-shards/1":
        assert code == 0  # our manifest: its names outside the folder are ignored, the run goes on
        assert json.loads((out / "manifest.json").read_text())["total"] == 4
    else:  # a manifest we did not write: refused in one line, nothing replaced
        assert code == 1
        line = [x for x in err.splitlines() if "error" in x]
        assert len(line) == 1 and "--force" in line[0] and "did not write" in line[0]
        assert json.loads((out / "manifest.json").read_text())["format"] == marker


def test_shard_prefix_beside_other_shards_is_refused_unless_force(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src, out = _faces(tmp_path / "src", n=6), tmp_path / "out"
    assert main(["shard", str(src), str(out), "--prefix", "train", "--maxcount", "2", "--workers", "1", "--quiet"]) == 0
    (out / "other-tool-000000.tar").write_bytes(b"not ours")
    train = {k: v for k, v in _hashes(out).items() if k.endswith(".tar")}
    assert len(train) == 4
    capsys.readouterr()
    assert main(["shard", str(src), str(out), "--prefix", "val", "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0] and "other-tool-000000.tar" in err[0]
    assert {k: v for k, v in _hashes(out).items() if k.endswith(".tar")} == train  # train shards intact
    assert main(["shard", str(src), str(out), "--prefix", "val", "--workers", "1", "--quiet", "--force"]) == 0
    after = _hashes(out)
    assert all(after[name] == digest for name, digest in train.items())  # kept byte for byte
    assert "val-000000.tar" in after
    assert [s["name"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == ["val-000000.tar"]
    # the same prefix again (our manifest lists it): no --force needed, stale own shards only are replaced
    assert main(["shard", str(src), str(out), "--prefix", "val", "--maxcount", "3", "--workers", "1", "--quiet",
                 "--force"]) == 0
    assert all(_hashes(out)[name] == digest for name, digest in train.items())


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("bad", ["truncated", "empty", "not_a_tar", "missing"])
def test_one_bad_bare_shard_is_counted_not_fatal(tmp_path: Path, bad: str) -> None:
    from daefr.data import FaceDataModule

    src = _faces(tmp_path / "src", n=12)
    png = (src / "face000.png").read_bytes()
    whole = _tar_bytes({f"g{i:02d}.png": png for i in range(12)})
    (tmp_path / "good.tar").write_bytes(whole)
    broken = tmp_path / "broken.tar"
    if bad == "truncated":
        other = _tar_bytes({f"t{i:02d}.png": png for i in range(12)})
        broken.write_bytes(other[: len(other) // 2 + 700])
    elif bad == "empty":
        broken.write_bytes(b"")
    elif bad == "not_a_tar":
        broken.write_bytes(b"<html>404 not found</html>" * 40)
    spec = f"{tmp_path / 'good.tar'}::{broken}"
    dm = FaceDataModule(train=spec, image_size=32, batch_size=2, shuffle_buffer=0, flip=False,
                        max_corrupt_fraction=0.5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) >= 6  # the length is known: no traceback in __len__
    keys = []
    for batch in loader:
        keys += dm.on_after_batch_transfer(batch, 0)["key"]
    tried, corrupt = dm.corrupt_counts("train")
    assert corrupt == 1  # the bad shard is counted once (not fatal)
    assert len(keys) == 2 * len(loader) and {f"g{i:02d}" for i in range(12)} & set(keys)
    strict = FaceDataModule(train=spec, image_size=32, batch_size=2, max_corrupt_fraction=0.0)
    strict.setup("fit")
    from daefr.data.dataset import CorruptDataError

    with pytest.raises(CorruptDataError) as info:
        for batch in strict.train_dataloader():
            strict.on_after_batch_transfer(batch, 0)
    assert "\n" not in str(info.value) and "max_corrupt_fraction=0.0" in str(info.value)


def test_only_bad_or_missing_shards_stop_with_one_line(tmp_path: Path) -> None:
    from daefr.data import FaceDataModule
    from daefr.data.dataset import CorruptDataError
    from daefr.errors import ConfigError

    (tmp_path / "empty.tar").write_bytes(b"")
    dm = FaceDataModule(train=str(tmp_path / "empty.tar"), image_size=32, batch_size=2)
    dm.setup("fit")
    with pytest.raises(CorruptDataError, match="none of the 1 train shards holds a readable sample") as info:
        len(dm.train_dataloader())
    assert "\n" not in str(info.value)
    for missing in (tmp_path / "no" / "such" / "folder", tmp_path / "nope-{000000..000003}.tar"):
        with pytest.raises(ConfigError, match="does not exist") as error:
            FaceDataModule(train=str(missing), image_size=32).setup("fit")
        assert "\n" not in str(error.value)


def test_gzip_bomb_member_is_stopped_at_the_decompression_limit(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gzip

    from daefr.data import sources

    monkeypatch.setattr(sources, "DECOMPRESS_FREE_BYTES", 1 << 20)  # the real floor is 64 MiB
    src = _faces(tmp_path / "src", n=2)
    png = (src / "face000.png").read_bytes()
    members = {"a.png": png, "b.png": png, "c.png": bytes(48 << 20), "d.png": png}
    (tmp_path / "bomb.tar.gz").write_bytes(gzip.compress(_tar_bytes(members), compresslevel=1))
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 1 << 20
    source = sources.ShardSource(str(tmp_path / "bomb.tar.gz"))
    read = []
    with pytest.raises(sources.SourceReadError, match=r"decompression limit \(32x the compressed size") as info:
        for key, _ in source.read(source.units()[0]):
            read.append(key)
    assert read == ["a"] and "\n" not in str(info.value)  # "b" is complete only when "c" starts
    assert str(info.value).endswith("re-shard it")  # nothing appended by the tar reader
    # through the dataset: counted as corrupt, the samples before the bomb are used
    from daefr.data.dataset import CorruptDataError, FaceDataset

    assert [b["key"] for b in FaceDataset(source, 1, 32, name="val", max_corrupt_fraction=1.0)] == [["a"]]
    with pytest.raises(CorruptDataError, match=r"1 of 2 samples .*decompression limit"):
        list(FaceDataset(source, 1, 32, name="val", max_corrupt_fraction=0.0))
    # a plain gzipped shard of real images reads whole
    (tmp_path / "ok.tar.gz").write_bytes(gzip.compress(_tar_bytes({"a.png": png, "b.png": png})))
    ok = sources.ShardSource(str(tmp_path / "ok.tar.gz"))
    assert [k for k, _ in ok.read(ok.units()[0])] == ["a", "b"]


def test_compressed_shards_of_each_kind_read_and_a_bz_named_member_is_not_mistaken(tmp_path: Path) -> None:
    import bz2
    import gzip
    import lzma

    from daefr.data import sources

    png = (_faces(tmp_path / "src", n=1) / "face000.png").read_bytes()
    plain = _tar_bytes({"BZh9_face.png": png, "b.png": png})  # a member name that starts like bzip2
    (tmp_path / "plain.tar").write_bytes(plain)
    (tmp_path / "s.tar.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "s.tar.bz2").write_bytes(bz2.compress(plain))
    (tmp_path / "s.tar.xz").write_bytes(lzma.compress(plain))
    (tmp_path / "twice.tar.gz.gz").write_bytes(gzip.compress(gzip.compress(plain)))
    for name in ("plain.tar", "s.tar.gz", "s.tar.bz2", "s.tar.xz"):
        source = sources.ShardSource(str(tmp_path / name))
        assert [k for k, _ in source.read(source.units()[0])] == ["BZh9_face", "b"], name
    twice = sources.ShardSource(str(tmp_path / "twice.tar.gz.gz"))
    with pytest.raises(sources.SourceReadError, match="compressed twice"):
        list(twice.read(twice.units()[0]))
