"""`daefr weights list/download` against a temporary Hub cache and a Hub-like server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daefr.cli import main
from daefr.testing.hub_cache import (
    DAEFR_REPO,
    checkpoint_bytes,
    isolated_hub_env,
    repo_folder,
    tiny_vqgan_state,
    write_tiny_daefr_release,
)
from daefr.utils import hub

COMMIT = "c" * 40


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, Path]:
    """Private HF_HOME / TORCH_HOME; no host name but the loopback resolves."""
    return isolated_hub_env(monkeypatch, tmp_path)


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers HEAD/GET /OWNER/REPO/resolve/REVISION/FILE like the Hub (commit, etag = sha256)."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _body(self) -> bytes | None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        return self.files.get("/".join(parts[:2] + parts[4:]))

    def _head(self, body: bytes | None) -> bool:
        self.requests.append(f"{self.command} {self.path}")
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return True

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._head(self._body())

    def do_GET(self) -> None:  # noqa: N802
        body = self._body()
        if self._head(body) and body is not None:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(env, monkeypatch) -> Iterator[type[FakeHub]]:
    handler = type("Hub", (FakeHub,), {"files": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    try:
        yield handler
    finally:
        server.shutdown()


def test_list_shows_every_name_and_its_cache_state(env, capsys) -> None:
    assert main(["weights", "list"]) == 0
    text = capsys.readouterr().out
    for name in hub.KNOWN_WEIGHTS:
        assert name in text
    assert "cached" not in text.replace("not cached", "")
    write_tiny_daefr_release(env["hub"])
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["daefr-hq-codebook"]["cached"] and rows["daefr-hq-codebook"]["size"].endswith("MiB")
    assert rows["daefr"]["cached"] is None  # the tiny release written here has no final model
    assert rows["vgg16"]["source"] == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert rows["vgg16"]["sha256"] == "397923af..."
    assert rows["daefr"]["source"] == f"hf://{DAEFR_REPO}/DAEFR_model.ckpt" and rows["daefr"]["licence"]


def test_download_fetches_into_the_hub_cache_layout(fake_hub, env, capsys) -> None:
    data = checkpoint_bytes({f"vqvae.{k}": v for k, v in tiny_vqgan_state(7).items()})
    fake_hub.files[f"{DAEFR_REPO}/HQ_codebook.ckpt"] = data
    assert main(["weights", "download", "daefr-hq-codebook"]) == 0
    folder = repo_folder(env["hub"], DAEFR_REPO)
    snapshot = folder / "snapshots" / COMMIT / "HQ_codebook.ckpt"
    assert snapshot.is_symlink() and snapshot.read_bytes() == data
    assert (folder / "refs" / "main").read_text() == COMMIT
    assert (folder / "blobs" / hashlib.sha256(data).hexdigest()).is_file()
    assert str(snapshot) in capsys.readouterr().out
    # now cached: resolving it (even with the server gone quiet) makes no request
    fake_hub.requests.clear()
    from daefr.stages.init_weights import read_state_dict

    assert "vqvae.encoder.conv_in.weight" in read_state_dict("daefr-hq-codebook")
    assert fake_hub.requests == []
    # a corrupted copy is detected, and `--force` replaces it
    Path(os.path.realpath(snapshot)).write_bytes(b"broken")
    hub._VERIFIED.clear()
    assert main(["weights", "download", "daefr-hq-codebook"]) == 1
    assert "corrupted" in capsys.readouterr().out
    assert main(["weights", "download", "daefr-hq-codebook", "--force"]) == 0
    assert snapshot.read_bytes() == data


def test_list_remote_asks_the_hub_for_sizes(fake_hub, capsys) -> None:
    fake_hub.files[f"{DAEFR_REPO}/DAEFR_model.ckpt"] = b"x" * 3000
    assert main(["weights", "list", "--remote"]) == 0
    text = capsys.readouterr().out
    assert "not cached (2.9 KiB on the Hub)" in text
    assert text.count("on the Hub)") == 1  # the other files are missing on this server: no size
    assert main(["weights", "list"]) == 0 and "on the Hub)" not in capsys.readouterr().out


def test_download_reports_each_failure_and_exits_1(fake_hub, capsys) -> None:
    assert main(["weights", "download", "daefr-association", "hf://someone/missing/file.ckpt", "no-such-name"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "3 of 3 failed"
    assert lines[0].startswith("daefr-association: FAILED:") and "EntryNotFound" in lines[0]
    assert "not a known weights name" in lines[2]


def test_download_offline_names_the_missing_file(env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "download", "daefr"]) == 1
    out = capsys.readouterr().out
    assert "HF_HUB_OFFLINE" in out and "daefr weights download daefr" in out


def test_usage_errors_are_one_line(env, capsys) -> None:
    assert main(["weights", "download"]) == 1
    assert "needs at least one NAME" in capsys.readouterr().err
    assert main(["weights", "list", "extra"]) == 1
    assert "takes no names" in capsys.readouterr().err


def test_the_tiny_release_converts_by_name_like_the_real_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daefr.cli import main
    from daefr.testing.hub_cache import isolated_hub_env, write_tiny_daefr_release

    env = isolated_hub_env(monkeypatch, tmp_path / "home")
    write_tiny_daefr_release(env["hub"])  # codebook files carry their PatchGAN, as the released ones do
    out = tmp_path / "hq_codebook.safetensors"
    assert main(["convert", "-w", "daefr-hq-codebook", "-o", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
