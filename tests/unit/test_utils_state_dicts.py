"""The state-dict mismatch reporter (daefr.utils.state_dicts): one line about keys/shapes that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from daefr.errors import CheckpointError
from daefr.interop.restorer_io import load_restorer, read_restorer_metadata, save_restorer
from daefr.models.restorer import DAEFRRestorer
from daefr.utils.state_dicts import compare_state_dicts, describe_mismatch


def test_describe_mismatch() -> None:
    expected = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "b": torch.zeros(1)}
    assert describe_mismatch(expected, {k: v.clone() for k, v in expected.items()}) is None
    given = {"a.weight": torch.zeros(4, 3), "b": torch.zeros(1), "c": torch.zeros(5)}
    text = describe_mismatch(expected, given)
    assert text == (
        "1 missing keys (e.g. a.bias); 1 unexpected keys (e.g. c); "
        "1 tensors with other shapes (e.g. a.weight (4, 3) vs (2, 3))"
    )


def test_compare_state_dicts_lists_each_kind() -> None:
    expected = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    diff = compare_state_dicts(expected, {"w": torch.zeros(3, 3), "x": torch.zeros(1)})
    assert not diff.ok and diff.missing == ["b"] and diff.unexpected == ["x"] and diff.reshaped == ["w"]
    assert diff.given_shapes["w"] == (3, 3) and diff.expected_shapes["w"] == (2, 3)
    assert compare_state_dicts(expected, dict(expected)).ok


def test_restorer_file_with_other_shapes_is_one_line(tmp_path: Path) -> None:
    """A restorer file whose tensors do not fit its recorded architecture: refused, reported by the shared reporter."""
    small = {"resolution": 32, "z_channels": 64, "embed_dim": 64, "n_embed": 128, "n_layers": 1,
             "transformer_dim": 64, "dim_mlp": 128}
    path = save_restorer(DAEFRRestorer.from_config("parity", **small), tmp_path / "r.safetensors")
    tensors = load_file(str(path))
    tensors["post_quant_conv.bias"] = torch.zeros(3)
    del tensors["decoder.conv_out.bias"]
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=read_restorer_metadata(path))
    with pytest.raises(CheckpointError, match=r"do not match the restorer architecture; 1 missing keys "
                                              r"\(e.g. decoder.conv_out.bias\); 1 tensors with other shapes"):
        load_restorer(tmp_path / "bad.safetensors")
