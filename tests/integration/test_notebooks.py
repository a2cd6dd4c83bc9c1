"""The notebooks in ``notebooks/`` run top to bottom in a kernel of this interpreter, with small settings.

Each notebook is executed with nbclient from an in-memory copy (the committed files stay without
outputs), with ``DAEFR_NOTEBOOK_FAST=1`` (tiny step counts), ``WANDB_MODE=offline`` and its outputs
redirected to a temporary folder through ``DAEFR_NOTEBOOK_OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
NAMES = ("quickstart", "train_tiny_chain", "writing_a_plugin")
KERNEL = "daefr-notebook-test"


def _kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernel spec that starts *this* interpreter (not whatever `python` is on PATH); env for the kernel."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "daefr test kernel", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DAEFR_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("DAEFR_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared, loaded CPU
    monkeypatch.delenv("DAEFR_WEIGHTS", raising=False)
    return out


def _execute(name: str) -> Any:
    """Run ``notebooks/<name>.ipynb`` (cwd: notebooks/) plus a last cell reporting the kernel's interpreter."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL-PYTHON', sys.executable)"))
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def _text(nb: Any) -> str:
    """All stream and text/plain outputs of the executed notebook, concatenated."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(str(output["data"].get("text/plain", "")))
    return "\n".join(parts)


def _images(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name}.ipynb has outputs; clear them"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _check_kernel(nb: Any) -> None:
    text = _text(nb)
    line = next(ln for ln in text.splitlines() if ln.startswith("KERNEL-PYTHON "))
    assert Path(line.split(" ", 1)[1].strip()).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
def test_quickstart_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _kernel_env(tmp_path, monkeypatch)
    nb = _execute("quickstart")
    _check_kernel(nb)
    text = _text(nb)
    assert "RANDOM weights" in text
    assert "face(s) found" in text and "codes used" in text
    assert (out / "random_tiny_restorer.safetensors").is_file()
    assert (out / "degrade_preview.png").stat().st_size > 1000
    assert _images(nb) >= 6  # crop, photo, faces, codes, histogram, preview, degradations
    assert not (NOTEBOOKS / "runs").exists()


@pytest.mark.slow
def test_quickstart_notebook_with_official_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DAEFR_WEIGHTS pointing at a file in the official final-stage layout (random weights) is used."""
    import torch

    from daefr.testing.daefr_tiny import random_official_state_dict

    out = _kernel_env(tmp_path, monkeypatch)
    weights = tmp_path / "DAEFR_model_tiny.ckpt"
    torch.save({"state_dict": random_official_state_dict("tiny", seed=1)}, weights)
    monkeypatch.setenv("DAEFR_WEIGHTS", str(weights))
    nb = _execute("quickstart")
    text = _text(nb)
    assert f"using weights from DAEFR_WEIGHTS: {weights}" in text
    assert "face size 64 px, latent grid 16x16, 1024 codes" in text
    assert "of 1024 codes used" in text
    assert not (out / "random_tiny_restorer.safetensors").exists()


@pytest.mark.slow
def test_train_tiny_chain_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _kernel_env(tmp_path, monkeypatch)
    nb = _execute("train_tiny_chain")
    _check_kernel(nb)
    for stage in ("hq_codebook", "lq_codebook", "association", "restoration"):
        assert (out / "runs" / "tiny" / stage / "checkpoints" / "last.ckpt").is_file(), stage
    assert (out / "runs" / "tiny" / "restoration" / "restorer.safetensors").is_file()
    runs = sorted(out.glob("wandb/offline-run-*"))
    assert len(runs) == 4, runs  # one offline W&B run per stage
    text = _text(nb)
    assert "PSNR" in text
    assert not (NOTEBOOKS / "runs").exists() and not (NOTEBOOKS / "wandb").exists()


@pytest.mark.slow
def test_writing_a_plugin_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _kernel_env(tmp_path, monkeypatch)
    nb = _execute("writing_a_plugin")
    _check_kernel(nb)
    text = _text(nb)
    assert "strided_conv" in text
    assert text.count("conforms") >= 2  # the notebook's encoder and degradation pass daefr.testing
    assert "AssertionError" in text  # the deliberately broken encoder is caught by the check
