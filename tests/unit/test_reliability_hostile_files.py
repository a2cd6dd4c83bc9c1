"""Issue 15: no code runs from model files, and size bombs are refused before allocation.

Every hostile file is built here, in the test. Code-execution cases point at a marker file that the
payload would create (``os.system("touch ...")`` or a module that touches it on import); the marker
must never appear.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from daefr import registry as reg
from daefr.cli import main
from daefr.errors import CheckpointError, UnsafeFileError
from daefr.interop.restorer_io import load_restorer, save_restorer
from daefr.models.restorer import DAEFRRestorer

#: A small restorer (16 px faces) that still has every kind of block.
SMALL: dict[str, Any] = {"ch_mult": [1, 2], "resolution": 16, "attn_resolutions": [8], "z_channels": 32, "embed_dim": 32,
         "n_embed": 64, "n_layers": 1, "transformer_dim": 32, "dim_mlp": 64}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DAEFRRestorer.from_config("tiny", **SMALL).eval()
    return save_restorer(model, tmp_path_factory.mktemp("good") / "small.safetensors")


def _rewrite(src: Path, dst: Path, *, arch: Any = None, tensors: Any = None) -> Path:
    """Copy of restorer file ``src`` with its ``arch`` metadata and/or tensors replaced."""
    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
        data = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if arch is not None:
        meta["arch"] = json.dumps(arch)
    if tensors is not None:
        data = tensors(data)
    save_file(data, str(dst), metadata=meta)
    return dst


def _arch(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(json.loads(handle.metadata()["arch"]))


@pytest.fixture()
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable module that creates a marker file when imported; returns (module name, marker)."""
    marker = tmp_path / "imported.marker"
    name = f"evil_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Encoder:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name, marker
    sys.modules.pop(name, None)


def _payloads(marker: Path, evil: str) -> dict[str, Any]:
    """Ways a restorer file's arch metadata could name code, keyed by case name."""
    system = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    return {
        "os_system_component": {"lq_encoder": system},
        "colon_form": {"decoder": {"class_path": "os:system", "init_args": {"command": f"touch {marker}"}}},
        "nested_in_registered_component": {"lq_encoder": {"class_path": "daefr.nn.vqgan.Encoder",
                                                          "init_args": {"extra": [system]}}},
        "module_run_on_import": {"hq_encoder": {"class_path": f"{evil}.Encoder"}},
        "stage_lookalike": {"fusion": {"class_path": "daefr.stages.base.LightningModule"}},
    }


@pytest.mark.parametrize("case", ["os_system_component", "colon_form", "nested_in_registered_component",
                                  "module_run_on_import", "stage_lookalike"])
def test_restorer_metadata_naming_code_is_refused(good_file: Path, tmp_path: Path, case: str,
                                                  evil_module: tuple[str, Path]) -> None:
    evil, import_marker = evil_module
    marker = tmp_path / "ran.marker"
    arch = {**_arch(good_file), **_payloads(marker, evil)[case]}
    hostile = _rewrite(good_file, tmp_path / "hostile.safetensors", arch=arch)
    with pytest.raises(UnsafeFileError, match="refused") as info:
        load_restorer(hostile)
    assert str(hostile) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists() and not import_marker.exists()


def test_restorer_metadata_hostile_through_cli_export_and_evaluate(good_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran.marker"
    arch = {**_arch(good_file), **_payloads(marker, "unused")["os_system_component"]}
    hostile = _rewrite(good_file, tmp_path / "hostile.safetensors", arch=arch)
    assert main(["export", str(hostile), "-o", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert "os.system" in err and "refused" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()
    lq = tmp_path / "lq"
    lq.mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16), (100, 80, 70)).save(lq / "a.png")
    assert main(["evaluate", "--checkpoint", str(hostile), "--lq", str(lq), "--gt", str(lq), "--metrics", "psnr",
                 "-o", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert "os.system" in err and "refused" in err and "Traceback" not in err
    assert not marker.exists()


def test_registered_class_path_in_metadata_still_loads(good_file: Path, tmp_path: Path) -> None:
    arch = {**_arch(good_file), "lq_encoder": {"class_path": "daefr.nn.vqgan:Encoder"},
            "hq_encoder": {"class_path": "daefr.nn.vqgan.Encoder"}}
    ok = _rewrite(good_file, tmp_path / "ok.safetensors", arch=arch)
    restored = load_restorer(ok)(torch.zeros(1, 3, 16, 16))
    assert restored.shape == (1, 3, 16, 16)


def test_registry_guard_while_reading_a_file(tmp_path: Path) -> None:
    """The registry itself refuses untrusted class paths while a file's specs are built."""
    with reg.reading_file("model.safetensors"):
        with pytest.raises(UnsafeFileError, match=r"model\.safetensors: refused.*'os\.system'"):
            reg.import_object("os.system")
        with pytest.raises(UnsafeFileError, match="subprocess.run"):
            reg.REGISTRY.build("encoders", {"class_path": "subprocess.run", "init_args": {"args": ["true"]}})
        assert reg.import_object("daefr.nn.vqgan.Encoder").__name__ == "Encoder"  # registered: allowed
        assert reg.REGISTRY.is_trusted_class_path("daefr.stages.codebook.CodebookStage")
    assert reg.import_object("os.path.join") is not None  # the user's own config may name anything
    with pytest.raises(UnsafeFileError, match=r"x\.ckpt: refused: top level holds a set"):
        reg.check_file_spec({1, 2}, "x.ckpt")


def _ckpt(path: Path, hparams: dict[str, Any]) -> Path:
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "hyper_parameters": hparams}, path)
    return path


def test_checkpoint_hyper_parameters_naming_code_are_refused(tmp_path: Path) -> None:
    from daefr.lightning_cli import _checkpoint_hparams

    marker = tmp_path / "ran.marker"
    system = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    cases: dict[str, dict[str, Any]] = {
        "stage": {"_class_path": "os.system", "command": f"touch {marker}"},
        "component": {"encoder": system, "learning_rate": 1e-4},
        "deep": {"loss": {"name": "vqgan", "pixel_loss": system}},
    }
    for name, hparams in cases.items():
        evil = _ckpt(tmp_path / f"{name}.ckpt", hparams)
        with pytest.raises(UnsafeFileError, match=r"hyper_parameters\).*refused.*os\.system") as info:
            _checkpoint_hparams(evil)
        assert str(evil) in str(info.value)
    assert not marker.exists()
    # a daefr stage and registered components are fine; output and input paths are never taken from the file
    fine = _ckpt(tmp_path / "fine.ckpt", {"_class_path": "daefr.stages.codebook.CodebookStage",
                                          "encoder": {"class_path": "daefr.nn.vqgan.Encoder"},
                                          "export_path": str(tmp_path / "victim.jpg"), "init_from": "/dev/zero"})
    assert _checkpoint_hparams(fine) == {"_class_path": "daefr.stages.codebook.CodebookStage",
                                         "encoder": {"class_path": "daefr.nn.vqgan.Encoder"}}


def test_zip_bomb_checkpoint_refused_before_unpacking(tmp_path: Path) -> None:
    """A deflated member of 64 MiB zeros in a ~64 KiB torch-style zip: refused from the directory alone."""
    from daefr.interop.official_reader import read_official_file
    from daefr.utils.checkpoint_io import AtomicCheckpointIO

    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(64 << 20))
    assert bomb.stat().st_size < 1 << 20
    for load in (read_official_file, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(UnsafeFileError, match=r"bomb\.ckpt: refused.*unpacks to 64\.0 MiB.*size limit hit"):
            load(bomb)
    from daefr.lightning_cli import _checkpoint_hparams

    with pytest.raises(UnsafeFileError, match="size limit hit"):
        _checkpoint_hparams(bomb)


def test_huge_n_embed_in_metadata_refused_without_allocating(good_file: Path, tmp_path: Path) -> None:
    """n_embed = 2**33 would ask for terabytes; the declared size is compared with the file first."""
    arch = {**_arch(good_file), "n_embed": 2**33}
    hostile = _rewrite(good_file, tmp_path / "huge.safetensors", arch=arch)
    with pytest.raises(UnsafeFileError, match=r"huge\.safetensors: refused.*MiB of weights.*size limit hit"):
        load_restorer(hostile)


@pytest.mark.parametrize("kind", ["nan", "inf", "integer"])
def test_non_finite_or_integer_weights_refused(good_file: Path, tmp_path: Path, kind: str) -> None:
    def damage(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = "decoder.conv_out.weight"
        if kind == "integer":
            data[key] = data[key].round().to(torch.int32)
        else:
            data[key] = data[key].clone()
            data[key].view(-1)[3] = float(kind)
        return data

    bad = _rewrite(good_file, tmp_path / f"{kind}.safetensors", tensors=damage)
    pattern = "not floating point" if kind == "integer" else "NaN/Inf"
    with pytest.raises(CheckpointError, match=rf"{kind}\.safetensors: weight 'decoder\.conv_out\.weight'.*{pattern}"):
        load_restorer(bad)


# ----- exported programs (.pt2) ------------------------------------------------------------------------


class _Payload:
    """Pickles to ``os.system(command)``: what a hostile archive member would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (self.command,)


@pytest.fixture(scope="module")
def good_pt2(good_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from daefr.interop.export import export_restorer

    out = tmp_path_factory.mktemp("pt2") / "small.pt2"
    return export_restorer(load_restorer(good_file), out, "exported-program", batch=None)


def _rebuild_pt2(src: Path, dst: Path, edit: Any) -> Path:
    """Copy of archive ``src`` where ``edit(relative name, bytes)`` returns new bytes (None: drop), plus extras."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        extra: dict[str, bytes] = {}
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            data = edit(rel, zin.read(info), extra)
            if data is not None:
                zout.writestr(info.filename, data)
        for rel, data in extra.items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def _pt2_cases(marker: Path) -> dict[str, Any]:
    evil = pickle.dumps(_Payload(f"touch {marker}"))

    def pickled_weight(rel: str, data: bytes, extra: dict[str, bytes]) -> bytes:
        if rel == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first.update(use_pickle=True, path_name="weight_pickled")
            extra["data/weights/weight_pickled"] = evil
            return json.dumps(config).encode()
        return data

    def opaque_constant(rel: str, data: bytes, extra: dict[str, bytes]) -> bytes:
        if rel == "data/constants/model_constants_config.json":
            extra["data/constants/opaque_obj_0"] = evil
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": True, "tensor_meta": None}}}).encode()
        return data

    def sample_inputs(rel: str, data: bytes, extra: dict[str, bytes]) -> bytes:
        if rel == "data/sample_inputs/model.pt":
            buffer = io.BytesIO()
            torch.save(_Payload(f"touch {marker}"), buffer)  # refused weights-only: torch would retry unsafely
            return buffer.getvalue()
        return data

    def native(rel: str, data: bytes, extra: dict[str, bytes]) -> bytes:
        extra["data/aotinductor/model/model.so"] = b"\x7fELF"
        return data

    def legacy(rel: str, data: bytes, extra: dict[str, bytes]) -> bytes:
        extra["data/weights/model.pt"] = evil
        return data

    return {"pickled_weight": pickled_weight, "opaque_constant": opaque_constant,
            "sample_inputs": sample_inputs, "native_code": native, "legacy_weights": legacy}


@pytest.mark.parametrize("case", ["pickled_weight", "opaque_constant", "sample_inputs", "native_code",
                                  "legacy_weights"])
def test_pt2_with_pickled_or_native_parts_is_refused(good_pt2: Path, tmp_path: Path, case: str) -> None:
    from daefr.inference.backends import load_network
    from daefr.interop.export import load_exported, read_export_metadata

    marker = tmp_path / "ran.marker"
    hostile = _rebuild_pt2(good_pt2, tmp_path / "hostile.pt2", _pt2_cases(marker)[case])
    for load in (lambda p: load_network(p, backend="auto"), read_export_metadata,
                 lambda p: load_exported(p, "exported-program")):
        with pytest.raises(UnsafeFileError, match=r"hostile\.pt2: refused") as info:
            load(hostile)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_pt2_hostile_through_restore_cli(good_pt2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    marker = tmp_path / "ran.marker"
    hostile = _rebuild_pt2(good_pt2, tmp_path / "evil.pt2", _pt2_cases(marker)["pickled_weight"])
    face = tmp_path / "face.png"
    Image.new("RGB", (16, 16), (120, 90, 80)).save(face)
    code = main(["restore", str(face), "-o", str(tmp_path / "out"), "-w", str(hostile), "--backend", "auto",
                 "--aligned", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "refused" in err and "Traceback" not in err
    assert not marker.exists()


def test_clean_pt2_still_loads(good_pt2: Path) -> None:
    from daefr.interop.export import load_exported, read_export_metadata

    assert read_export_metadata(good_pt2)["input_size"] == "16"
    restored, _codes = load_exported(good_pt2, "exported-program")(torch.zeros(1, 3, 16, 16))
    assert restored.shape == (1, 3, 16, 16)


def test_official_checkpoint_with_nan_weights_refused(tmp_path: Path) -> None:
    from daefr.testing.daefr_tiny import random_official_state_dict

    micro = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32, "attn_resolutions": [16],
             "z_channels": 64, "embed_dim": 64, "n_embed": 64, "n_layers": 1, "dim_mlp": 128, "transformer_dim": 64}
    sd = random_official_state_dict(micro, seed=0)
    sd["vqvae.decoder.conv_out.weight"] = sd["vqvae.decoder.conv_out.weight"].clone()
    sd["vqvae.decoder.conv_out.weight"].view(-1)[0] = float("nan")
    path = tmp_path / "DAEFR_model.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=r"DAEFR_model\.ckpt: the official checkpoint: weight 'decoder\.conv_out\.weight'.*NaN"):
        load_restorer(path)
