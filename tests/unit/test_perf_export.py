"""Exported restorer (ONNX, TorchScript, ExportedProgram) vs eager, and the ONNX backend of the Restorer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.cli import main
from daefr.errors import ConfigError
from daefr.inference.backends import ExportedNetwork, load_network
from daefr.interop.export import (
    DEFAULT_TOLERANCE,
    ONNX_SESSION_DEFAULTS,
    OnnxRunner,
    check_export,
    export_restorer,
    load_exported,
    read_export_metadata,
    release_freed_heap,
)
from daefr.interop.restorer_io import save_restorer
from daefr.models.restorer import DAEFRRestorer

#: The ``tiny`` preset cut to two levels (16 px faces, 8x8 latent) and one narrow transformer layer:
#: export time grows with the number of ops, so the export tests use the smallest graph that still has
#: every kind of block (attention, up/downsampling, fusion, transformer, codebook lookup).
SMALL = {"ch_mult": [1, 2], "resolution": 16, "attn_resolutions": [8], "z_channels": 64, "embed_dim": 64,
         "n_embed": 128, "n_layers": 1, "transformer_dim": 64, "dim_mlp": 128}


@pytest.fixture(scope="module")
def restorer() -> DAEFRRestorer:
    """The ``tiny`` preset reduced by :data:`SMALL`, seeded random weights."""
    torch.manual_seed(0)
    model = DAEFRRestorer.from_config("tiny", **SMALL).eval()
    with torch.no_grad():
        model.predictor.position_emb.normal_(std=0.02)  # type: ignore[union-attr,operator]
    return model


@pytest.fixture(scope="module")
def weights(restorer: DAEFRRestorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_restorer(restorer, tmp_path_factory.mktemp("weights") / "small.safetensors")


def test_tolerance_is_the_issue_target() -> None:
    assert DEFAULT_TOLERANCE == {"max_abs": 1e-3, "code_agreement": 0.99}


def test_cli_onnx_export_dynamic_batch_and_backend(weights: Path, restorer: DAEFRRestorer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.onnx"
    assert main(["export", str(weights), "-o", str(out), "--fast", "--check", "--check-batch", "3"]) == 0
    text = capsys.readouterr().out
    assert "PASS: onnx vs eager on 3 input(s)" in text and out.is_file()
    meta = read_export_metadata(out)
    assert meta["batch"] == "dynamic" and meta["fast"] == "true" and meta["input_size"] == "16"
    with pytest.raises(ConfigError, match="exists"):  # never overwritten without --force
        export_restorer(restorer, out, "onnx")
    # the Restorer's ONNX backend: uint8 crops in, same pixels as eager torch (within one level)
    network = load_network(out, backend="onnx")
    assert isinstance(network, ExportedNetwork) and network.input_size == 16
    from daefr.inference.restorer import Restorer

    crops = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    by_onnx = Restorer(network, device="cpu", batch_size=2).restore_faces(crops)
    by_torch = Restorer(restorer, device="cpu", batch_size=2).restore_faces(crops)
    assert np.abs(by_onnx.astype(int) - by_torch.astype(int)).max() <= 1
    # `daefr restore --backend onnx` on an aligned crop
    from daefr.utils.images import read_image, write_image

    write_image(tmp_path / "face.png", crops[0])
    assert main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "-w", str(out),
                 "--backend", "onnx", "--aligned", "--no-progress"]) == 0
    restored = read_image(tmp_path / "out" / "restored_faces" / "face.png")
    assert np.abs(restored.astype(int) - by_torch[0].astype(int)).max() <= 1


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on this shared 2-core machine, a frozen TorchScript graph run with 2 threads
    spent ~7 ms of busy-waiting per op (2.8 s per tiny forward instead of 9 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # tracing + freezing take ~10 s of CPU
@pytest.mark.usefixtures("one_thread")
def test_torchscript_fixed_batch_parity_graph(restorer: DAEFRRestorer, tmp_path: Path) -> None:
    path = export_restorer(restorer, tmp_path / "small.ts", "torchscript", batch=2)
    result = check_export(path, restorer)
    assert result.batch == 2 and result.passed, result.summary()
    assert result.max_abs <= DEFAULT_TOLERANCE["max_abs"]
    # a fixed-batch file serves any number of faces in chunks
    network = load_network(path)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = restorer(x)
    assert (network(x) - ref).abs().max().item() < DEFAULT_TOLERANCE["max_abs"]


@pytest.mark.slow  # torch.export + save/load take ~20 s of CPU
def test_exported_program_dynamic_fast_graph(restorer: DAEFRRestorer, tmp_path: Path) -> None:
    path = export_restorer(restorer, tmp_path / "small.pt2", "exported-program", fast=True)
    result = check_export(path, restorer, batch=3)
    assert result.passed, result.summary()
    assert result.code_agreement >= DEFAULT_TOLERANCE["code_agreement"]


def test_export_rejects_bad_requests(restorer: DAEFRRestorer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        export_restorer(restorer, tmp_path / "x.bin", "tflite")
    with pytest.raises(ConfigError, match="batch"):
        export_restorer(restorer, tmp_path / "x.onnx", "onnx", batch=0)
    with pytest.raises(ConfigError, match="backend"):
        load_network(tmp_path / "x.onnx", backend="tensorrt")


@pytest.fixture(scope="module")
def fast_onnx(restorer: DAEFRRestorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fast graph of :func:`restorer` as ONNX with a dynamic batch."""
    return export_restorer(restorer, tmp_path_factory.mktemp("onnx") / "fast.onnx", "onnx", fast=True)


def _eager_fast(restorer: DAEFRRestorer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from daefr.interop.export import _prepare

    with torch.inference_mode():
        restored, indices = _prepare(restorer, fast=True)(x)
    return restored, indices


def test_onnx_session_defaults_are_applied_and_match_eager(fast_onnx: Path, restorer: DAEFRRestorer) -> None:
    import onnxruntime as ort

    run = load_exported(fast_onnx, threads=1)
    assert isinstance(run, OnnxRunner) and run.settings == ONNX_SESSION_DEFAULTS
    opts = run.session.get_session_options()
    # the memory-saving choices (benchmarks/RESULTS.md): no per-shape memory pattern, arena kept
    assert opts.enable_mem_pattern is False and opts.enable_cpu_mem_arena is True
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref_img, ref_idx = _eager_fast(restorer, x)
    for _ in range(2):  # a second run reuses the arena's chunks (no memory pattern): same results
        img, idx = run(x)
        assert (img - ref_img).abs().max().item() < DEFAULT_TOLERANCE["max_abs"]
        assert (idx == ref_idx).float().mean().item() >= DEFAULT_TOLERANCE["code_agreement"]
    single, _ = run(x[1:2])  # another batch size after the first
    assert (single - ref_img[1:2]).abs().max().item() < DEFAULT_TOLERANCE["max_abs"]


def test_onnx_session_options_override(fast_onnx: Path, restorer: DAEFRRestorer) -> None:
    import onnxruntime as ort

    run = load_exported(fast_onnx, onnx_options={"graph_optimization_level": "basic", "enable_mem_pattern": True,
                                                 "enable_cpu_mem_arena": False, "release_freed_heap": False})
    opts = run.session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.enable_mem_pattern is True and opts.enable_cpu_mem_arena is False
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ref_img, _ = _eager_fast(restorer, x)
    assert (run(x)[0] - ref_img).abs().max().item() < DEFAULT_TOLERANCE["max_abs"]
    with pytest.raises(ConfigError, match="unknown ONNX Runtime option"):
        load_exported(fast_onnx, onnx_options={"arena": False})
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        load_exported(fast_onnx, onnx_options={"graph_optimization_level": "max"})
    # the Restorer's backend passes the overrides on
    network = load_network(fast_onnx, backend="onnx", onnx_options={"enable_mem_pattern": True})
    assert isinstance(network, ExportedNetwork) and network.run.settings["enable_mem_pattern"] is True
    # and so does the Python API's one-line loader
    from daefr.inference.restorer import Restorer

    api = Restorer.from_pretrained(fast_onnx, backend="onnx", onnx_options={"enable_mem_pattern": True})
    assert api.model.run.settings["enable_mem_pattern"] is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_freed_heap_returns_freed_pages() -> None:
    """20 MB freed in holes of the heap stay resident until released (what ONNX Runtime's freed parse does)."""
    import ctypes

    def rss_anon_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise AssertionError("no RssAnon in /proc/self/status")

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(100_000) for _ in range(400)]  # under glibc's mmap threshold: on the heap
    try:
        for block in blocks:
            ctypes.memset(block, 1, 100_000)
        for block in blocks[::2]:  # every other block: holes that free() cannot trim off the heap's top
            libc.free(block)
        before = rss_anon_kb()
        assert release_freed_heap() is True
        assert rss_anon_kb() < before - 10_000
    finally:
        for block in blocks[1::2]:
            libc.free(block)


def test_onnx_backend_from_weights_exports_in_place(weights: Path, restorer: DAEFRRestorer) -> None:
    """A weights file on the onnx backend: exported (in place, the loaded copy is discarded) and run."""
    network = load_network(weights, backend="onnx", fast=True)
    assert isinstance(network, ExportedNetwork) and network.path.suffix == ".onnx"
    assert read_export_metadata(network.path)["fast"] == "true"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ref_img, _ = _eager_fast(restorer, x)
    assert (network(x) - ref_img).abs().max().item() < DEFAULT_TOLERANCE["max_abs"]
    # the fixture's restorer itself was never converted (exports of it go through a deep copy)
    assert not getattr(restorer, "fast", False)
    # the temporary export is removed with the network
    folder = network.path.parent
    assert folder.is_dir()
    del network
    import gc

    gc.collect()
    assert not folder.exists()
