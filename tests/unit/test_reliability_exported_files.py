"""Issue 15: hostile exported models (ONNX, TorchScript), integer official weights, export temporaries.

Every hostile file is built here. ONNX files are small graphs made with ``onnx.helper``; the TorchScript
payload is a scripted module whose forward writes a marker file (``torch.from_file(..., shared=True)``
creates and maps it), so a refusal is shown by the marker never appearing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from daefr.cli import main
from daefr.errors import CheckpointError, UnsafeFileError
from daefr.inference.backends import load_network
from daefr.interop.export import export_restorer, load_exported, read_export_metadata
from daefr.interop.onnx_guard import check_onnx_file

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SMALL: dict[str, Any] = {"ch_mult": [1, 2], "resolution": 16, "attn_resolutions": [8], "z_channels": 32,
                         "embed_dim": 32, "n_embed": 64, "n_layers": 1, "transformer_dim": 32, "dim_mlp": 64}


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# ----- ONNX ---------------------------------------------------------------------------------------------
def _graph_model(*, weight: Any = None, custom_domain: str | None = None, broken: bool = False) -> Any:
    """lq (1, 3, 2, 2) -> restored = lq + w, indices = Shape(lq): the output names of a daefr export."""
    w = weight if weight is not None else numpy_helper.from_array(np.zeros((1, 3, 2, 2), np.float32), "w")
    add_inputs = ["lq", "missing_tensor" if broken else "w"]
    nodes = [helper.make_node("Add", add_inputs, ["restored"], name="add"),
             helper.make_node("Shape", ["lq"], ["indices"], name="shape")]
    opsets = [helper.make_opsetid("", 17)]
    if custom_domain is not None:
        nodes[0] = helper.make_node("Backdoor", add_inputs, ["restored"], name="add", domain=custom_domain)
        opsets.append(helper.make_opsetid(custom_domain, 1))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("lq", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [1, 3, 2, 2]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, [4])], initializer=[w])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _external_weight(location: str, length: int | str = 48) -> Any:
    """Initializer ``w`` (1, 3, 2, 2) float32 whose bytes are read from ``location``."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 3, 2, 2])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return w


def _save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink_out"])
def test_onnx_external_data_outside_its_folder_is_refused(tmp_path: Path, case: str) -> None:
    secret = tmp_path / "secret.bin"  # outside the model folder; 48 bytes would pass as the weight
    secret.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    location = {"dotdot": "../../secret.bin", "absolute": str(secret), "symlink_out": "weights.bin"}[case]
    if case == "symlink_out":
        (folder / "weights.bin").symlink_to(secret)
    path = _save(_graph_model(weight=_external_weight(location)), folder / "model.onnx")
    for load in (check_onnx_file, lambda p: load_exported(p, "onnx"), lambda p: load_network(p, backend="auto")):
        with pytest.raises(UnsafeFileError) as exc:
            load(path)
        text = _one_line(exc)
        assert "outside the model's folder" in text and str(path) in text


def test_onnx_external_data_beside_the_file_loads_and_runs(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(np.full(12, 0.5, np.float32).tobytes())
    path = _save(_graph_model(weight=_external_weight("w.bin")), tmp_path / "model.onnx")
    restored, _indices = load_exported(path, "onnx")(torch.zeros(1, 3, 2, 2))
    assert torch.allclose(restored, torch.full((1, 3, 2, 2), 0.5))
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)  # now shorter than the tensor it holds
    with pytest.raises(CheckpointError, match="past the end"):
        load_exported(path, "onnx")
    _save(_graph_model(weight=_external_weight("w.bin", length="x")), path)
    with pytest.raises(CheckpointError, match="non-numeric"):
        load_exported(path, "onnx")


def test_onnx_custom_operator_domain_is_refused(tmp_path: Path) -> None:
    path = _save(_graph_model(custom_domain="com.evil.ops"), tmp_path / "model.onnx")
    for load in (check_onnx_file, lambda p: load_exported(p, "onnx")):
        with pytest.raises(UnsafeFileError) as exc:
            load(path)
        assert "custom operator domain 'com.evil.ops'" in _one_line(exc)
    # the node alone (domain not imported) is refused too
    model = _graph_model(custom_domain="com.evil.ops")
    del model.opset_import[1]
    with pytest.raises(UnsafeFileError) as exc:
        check_onnx_file(_save(model, tmp_path / "node_only.onnx"))
    assert "com.evil.ops::Backdoor" in _one_line(exc)


def test_onnx_graph_that_fails_the_checker_is_refused(tmp_path: Path) -> None:
    path = _save(_graph_model(broken=True), tmp_path / "model.onnx")
    with pytest.raises(CheckpointError) as exc:
        load_exported(path, "onnx")
    assert "not a valid ONNX model" in _one_line(exc) and "missing_tensor" in str(exc.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 not a protobuf \xff\xff\xff")
    with pytest.raises(CheckpointError) as exc:
        load_exported(junk, "onnx")
    assert str(junk) in _one_line(exc)


def test_onnx_hostile_file_through_restore_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daefr.utils.images import write_image

    path = _save(_graph_model(weight=_external_weight("/etc/hostname")), tmp_path / "m" / "model.onnx")
    write_image(tmp_path / "face.png", np.zeros((16, 16, 3), np.uint8))
    assert main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "-w", str(path),
                 "--aligned", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("outside the model's folder" in line for line in err) and "Traceback" not in "\n".join(err)


# ----- TorchScript ----------------------------------------------------------------------------------------
class _WritesMarker(torch.nn.Module):
    """forward creates ``marker`` (4 bytes, shared mapping) and fills it: what any TorchScript file may do."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mapped = torch.from_file(self.marker, shared=True, size=4, dtype=torch.uint8)
        mapped.fill_(88)
        return lq + mapped.sum().float() * 0, torch.zeros(lq.shape[0], 4, dtype=torch.long)


def _evil_torchscript(path: Path, marker: Path) -> Path:
    meta = '{"format": "daefr.exported_restorer", "input_size": "16", "batch": "dynamic"}'
    torch.jit.save(torch.jit.script(_WritesMarker(str(marker))), str(path), _extra_files={"daefr_export.json": meta})
    return path


def test_torchscript_is_refused_without_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran.marker"
    path = _evil_torchscript(tmp_path / "model.ts", marker)
    assert read_export_metadata(path)["input_size"] == "16"  # read from the zip, nothing loaded
    for load in (lambda p: load_exported(p, "torchscript"), lambda p: load_network(p, backend="auto")):
        with pytest.raises(UnsafeFileError) as exc:
            load(path)
        assert "TorchScript file is a program" in _one_line(exc) and "trust_code=True" in str(exc.value)
    assert not marker.exists()
    from daefr.utils.images import write_image

    write_image(tmp_path / "face.png", np.zeros((16, 16, 3), np.uint8))
    assert main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "-w", str(path),
                 "--aligned", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "TorchScript file is a program" in err and "--trust-torchscript" in err
    assert not marker.exists()
    # the payload is real: with the trust flag it runs (and writes the marker), in Python and on the command line
    load_exported(path, "torchscript", trust_code=True)(torch.zeros(1, 3, 16, 16))
    assert marker.read_bytes() == b"XXXX"
    marker.unlink()
    main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out2"), "-w", str(path), "--aligned",
          "--no-progress", "--trust-torchscript"])
    assert marker.read_bytes() == b"XXXX"


@pytest.mark.slow  # tracing + freezing the small restorer take a few seconds of CPU
def test_own_torchscript_export_runs_until_replaced(tmp_path: Path) -> None:
    from daefr.models.restorer import DAEFRRestorer

    torch.manual_seed(0)
    path = export_restorer(DAEFRRestorer.from_config("tiny", **SMALL).eval(), tmp_path / "small.ts", "torchscript",
                           batch=1)
    restored, _codes = load_exported(path, "torchscript")(torch.zeros(1, 3, 16, 16))  # this process wrote it
    assert restored.shape == (1, 3, 16, 16)
    marker = tmp_path / "ran.marker"
    _evil_torchscript(tmp_path / "evil.ts", marker).replace(path)  # swapped under the same name
    with pytest.raises(UnsafeFileError):
        load_exported(path, "torchscript")
    assert not marker.exists()


# ----- integer official weights ----------------------------------------------------------------------------
def test_convert_refuses_integer_official_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daefr.interop.convert import convert_official
    from daefr.testing.daefr_tiny import random_official_state_dict

    micro = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 32, "attn_resolutions": [16],
             "z_channels": 64, "embed_dim": 64, "n_embed": 64, "n_layers": 1, "dim_mlp": 128, "transformer_dim": 64}
    sd = random_official_state_dict(micro, seed=0)
    key = "vqvae.decoder.conv_out.weight"
    sd[key] = (sd[key] * 100).round().to(torch.int32)  # would be cast to float by load_state_dict
    src = tmp_path / "DAEFR_model.ckpt"
    torch.save({"state_dict": sd}, src)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError) as exc:
        convert_official(src, out)
    assert f"weight {key!r} is stored as torch.int32, not floating point" in _one_line(exc)
    assert main(["convert", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and not out.exists()
    import daefr  # restoring with the official file directly refuses it the same way

    with pytest.raises(CheckpointError, match="stored as torch.int32, not floating point"):
        daefr.load_restorer(src)
    # integer step counters are the one integer entry of official files: they do not count
    sd[key] = sd[key].float()
    sd["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(7)
    torch.save({"state_dict": sd}, src)
    from daefr.interop.official_reader import check_float_weights, read_official_checkpoint

    check_float_weights(read_official_checkpoint(src), src)


# ----- export temporaries ----------------------------------------------------------------------------------
_KILLED_WRITER = """
import os, signal, sys
from daefr.utils.io import atomic_path
with atomic_path(sys.argv[1], suffix=".tmp.onnx") as tmp:
    tmp.write_bytes(b"half an export")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_export_removes_temporaries_of_a_killed_export(tmp_path: Path) -> None:
    from daefr.models.restorer import DAEFRRestorer
    from daefr.utils.io import atomic_path

    target = tmp_path / "model.onnx"
    run = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], check=False)
    assert run.returncode == -signal.SIGKILL
    orphans = [p for p in tmp_path.iterdir() if p.name.startswith(".model.onnx.")]
    assert len(orphans) == 1 and not target.exists()
    torch.manual_seed(0)
    model = DAEFRRestorer.from_config("tiny", **SMALL).eval()
    with atomic_path(tmp_path / "busy.onnx", suffix=".tmp.onnx") as live:  # a live writer's temporary stays
        live.write_bytes(b"in progress")
        export_restorer(model, tmp_path / "other.onnx", "onnx")  # another name, same folder
        assert not orphans[0].exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy.onnx", "other.onnx"]


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daefr.models.restorer import DAEFRRestorer

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_restorer(DAEFRRestorer.from_config("tiny", **SMALL).eval(), tmp_path / "m.onnx", "onnx")
    assert os.listdir(tmp_path) == []

