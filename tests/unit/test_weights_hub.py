"""Weights by name / hf:// URI / URL: a Hub cache laid out as huggingface_hub does, offline errors, hashes."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from daefr.errors import CheckpointError, WeightsNotFoundError
from daefr.testing.hub_cache import (
    DAEFR_REPO,
    isolated_hub_env,
    repo_folder,
    tiny_vqgan_state,
    write_hub_snapshot,
    write_tiny_daefr_release,
)
from daefr.utils import hub
from daefr.utils.weights import resolve_weights, resolve_weights_spec


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, Path]:
    """Private HF_HOME / TORCH_HOME; no host name but the loopback resolves."""
    return isolated_hub_env(monkeypatch, tmp_path)


def _sd(path: Path) -> dict[str, torch.Tensor]:
    from daefr.stages.init_weights import read_state_dict

    return read_state_dict(path)


def test_names_resolve_to_the_hub_cache_snapshot(env) -> None:
    written = write_tiny_daefr_release(env["hub"])
    path = resolve_weights_spec("daefr-hq-codebook")
    assert path == written["HQ_codebook.ckpt"]
    assert path.parent.parent.name == "snapshots" and path.is_symlink()
    sd = _sd(Path("daefr-association"))  # a spec may arrive as a PathLike too
    assert "vqvae_LQ.encoder.conv_in.weight" in sd and "logit_scale" in sd
    expected = tiny_vqgan_state(1)["encoder.conv_in.weight"]
    assert torch.equal(_sd(Path("daefr-hq-codebook"))["vqvae.encoder.conv_in.weight"], expected)


def test_local_path_wins_over_a_name_and_typos_get_a_hint(env, tmp_path, monkeypatch) -> None:
    write_tiny_daefr_release(env["hub"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "daefr-hq-codebook").write_bytes(b"local file")
    assert resolve_weights_spec("daefr-hq-codebook") == Path("daefr-hq-codebook")
    (tmp_path / "daefr-lq-codebook").mkdir()  # a folder is never weights: the name is meant
    assert resolve_weights_spec("daefr-lq-codebook").name == "LQ_codebook.ckpt"
    assert resolve_weights("daefr-lq-codebook", "LQ_codebook.pth", "x", "y").name == "LQ_codebook.ckpt"
    with pytest.raises(WeightsNotFoundError, match="did you mean the name daefr-association"):
        resolve_weights_spec("daefr-asociation")


def test_hf_uri_and_revisions(env) -> None:
    main = write_hub_snapshot(env["hub"], "someone/faces", {"w/model.ckpt": b"main bytes"}, commit="a" * 40)
    tagged = write_hub_snapshot(env["hub"], "someone/faces", {"w/model.ckpt": b"v1 bytes"}, revision="v1",
                                commit="b" * 40)
    # refs/main still points at the first commit: the second call wrote refs/v1
    assert resolve_weights_spec("hf://someone/faces/w/model.ckpt") == main["w/model.ckpt"]
    assert resolve_weights_spec("hf://someone/faces/w/model.ckpt@v1").read_bytes() == b"v1 bytes"
    assert resolve_weights_spec(f"hf://someone/faces/w/model.ckpt@{'b' * 40}") == tagged["w/model.ckpt"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with pytest.raises(WeightsNotFoundError, match="not in the Hub cache"):
            resolve_weights_spec("hf://someone/faces/w/model.ckpt@v2")
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    with pytest.raises(WeightsNotFoundError, match="expected hf://OWNER/REPO/FILE"):
        resolve_weights_spec("hf://someone/faces")


def test_small_non_lfs_files_are_checked_by_their_git_sha1(env) -> None:
    paths = write_hub_snapshot(env["hub"], "someone/cfg", {"config.json": b"{}"}, lfs=False)
    assert resolve_weights_spec("hf://someone/cfg/config.json") == paths["config.json"]
    Path(os.path.realpath(paths["config.json"])).write_bytes(b"{ }")
    hub._VERIFIED.clear()
    with pytest.raises(CheckpointError, match="corrupted.*sha1"):
        resolve_weights_spec("hf://someone/cfg/config.json")


def test_offline_missing_name_is_one_line_with_the_download_command(env, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights_spec("daefr-association", "association checkpoint")
    text = str(info.value)
    assert "\n" not in text
    assert "association checkpoint" in text and "daefr weights download daefr-association" in text
    assert "local file" in text and str(env["hub"]) in text
    with pytest.raises(WeightsNotFoundError, match="daefr weights download vgg16"):
        resolve_weights_spec("vgg16")


def test_a_corrupted_cached_blob_is_detected_by_its_hash(env) -> None:
    written = write_tiny_daefr_release(env["hub"])
    blob = Path(os.path.realpath(written["LQ_codebook.ckpt"]))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupted .*daefr weights download daefr-lq-codebook --force"):
        resolve_weights_spec("daefr-lq-codebook")


def test_the_table_sha256_is_checked_and_names_work_for_default_file_lookups(env, monkeypatch) -> None:
    from dataclasses import replace

    from daefr.testing.weights import write_random_lpips_weights

    files = write_random_lpips_weights(env["urls"].parent / "src")
    env["urls"].mkdir(parents=True)
    vgg = env["urls"] / "vgg16-397923af.pth"
    vgg.write_bytes(files.vgg.read_bytes())
    # the real torchvision file's published prefix does not match random weights: detected
    with pytest.raises(CheckpointError, match="corrupted.*expected 397923af"):
        resolve_weights_spec("vgg16")
    digest = hashlib.sha256(vgg.read_bytes()).hexdigest()
    table = dict(hub.KNOWN_WEIGHTS)
    table["vgg16"] = replace(table["vgg16"], sha256_prefix=None, sha256=digest)
    monkeypatch.setattr(hub, "KNOWN_WEIGHTS", table)
    (env["urls"] / "lpips-v0.1-vgg.pth").write_bytes(files.lin.read_bytes())
    from daefr.losses.lpips import LPIPS

    by_name = LPIPS(vgg_path="vgg16", lin_path="lpips-vgg")
    by_path = LPIPS(vgg_path=files.vgg, lin_path=files.lin)
    for (k, a), b in zip(by_name.state_dict().items(), by_path.state_dict().values()):
        assert torch.equal(a, b), k
    # no path at all: the lin heads are found in the cache of their known name, without network
    from daefr.losses.lpips import LIN_FILE

    assert resolve_weights(None, LIN_FILE, "heads", "src") == env["urls"] / "lpips-v0.1-vgg.pth"


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_non_regular_files_are_refused_in_one_line(env, tmp_path, kind) -> None:
    if kind == "fifo":
        target = tmp_path / "weights.ckpt"
        os.mkfifo(target)
    elif kind == "device":
        target = Path("/dev/zero")
    else:
        target = tmp_path / "folder.ckpt"
        target.mkdir()
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="not a weights file") as info:
        resolve_weights_spec(target, "restorer weights")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not a weights file"):
        _sd(target)  # every stage's init_*_from goes through read_state_dict
    if kind != "folder":
        with pytest.raises(CheckpointError, match="not a weights file"):
            resolve_weights(target, "vgg.pth", "LPIPS heads", "somewhere")
    else:
        with pytest.raises(WeightsNotFoundError, match="has no 'vgg.pth'"):
            resolve_weights(target, "vgg.pth", "LPIPS heads", "somewhere")
    assert time.monotonic() - start < 5  # a FIFO is never opened (it would block)


def test_an_unreachable_hub_fails_fast_with_one_line(env) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights_spec("daefr")
    elapsed = time.monotonic() - start
    text = str(info.value)
    assert "cannot download hf://LIAGM/DAEFR_pretrain_model/DAEFR_model.ckpt" in text and "\n" not in text
    assert "daefr weights download daefr" in text
    assert elapsed < 10, f"took {elapsed:.1f} s: retries with back-off instead of failing"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers (a black-holed network)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_silent_endpoint_times_out(env, silent_server, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", silent_server)
    monkeypatch.setenv(hub.TIMEOUT_ENV, "0.5")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="cannot download"):
        resolve_weights_spec("daefr-hq-codebook")
    with pytest.raises(WeightsNotFoundError, match="cannot download"):
        resolve_weights_spec(f"{silent_server}/model.pth")
    assert time.monotonic() - start < 10


def test_the_tiny_release_has_the_official_layout_on_disk(env) -> None:
    write_tiny_daefr_release(env["hub"])
    folder = repo_folder(env["hub"], DAEFR_REPO)
    commit = (folder / "refs" / "main").read_text()
    assert len(commit) == 40 and "\n" not in commit
    names = sorted(p.name for p in (folder / "snapshots" / commit).iterdir())
    assert names == ["Association_stage.ckpt", "HQ_codebook.ckpt", "LQ_codebook.ckpt"]
    for blob in (folder / "blobs").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # what huggingface_hub itself finds there, offline
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(DAEFR_REPO, "HQ_codebook.ckpt", cache_dir=str(env["hub"]))
    assert found == str(folder / "snapshots" / commit / "HQ_codebook.ckpt")


def _serve(handler: type, directory: Path | None = None) -> tuple[object, str]:
    import functools
    import http.server

    factory = functools.partial(handler, directory=str(directory)) if directory else handler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_url_downloads_are_cached_and_hash_checked(env, tmp_path) -> None:
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    site = tmp_path / "site"
    site.mkdir()
    payload = b"\x00weights\x01" * 100
    (site / "heads.pth").write_bytes(payload)
    server, base = _serve(Quiet, site)
    try:
        digest = hashlib.sha256(payload).hexdigest()
        with pytest.raises(CheckpointError, match="expected 0000000000000000"):
            resolve_weights_spec(f"{base}/heads.pth#sha256={'0' * 64}")
        assert not (env["urls"] / "heads.pth").exists() and not list(env["urls"].glob(".*partial"))
        path = resolve_weights_spec(f"{base}/heads.pth#sha256={digest}")
        assert path == env["urls"] / "heads.pth" and path.read_bytes() == payload
        # no published hash: the first download records one, later uses check it
        (site / "other.pth").write_bytes(payload[::-1])
        other = resolve_weights_spec(f"{base}/other.pth")
        assert (env["urls"] / "other.pth.sha256").read_text().strip() == hashlib.sha256(payload[::-1]).hexdigest()
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    # cached: no server needed any more
    assert resolve_weights_spec(f"{base}/heads.pth#sha256={digest}") == path
    other.write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="corrupted"):
        resolve_weights_spec(f"{base}/other.pth")
