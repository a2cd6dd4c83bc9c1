"""describe_mismatch: one line about keys/shapes that do not fit (daefr.utils.state_dicts)."""

from __future__ import annotations

import torch

from daefr.utils.state_dicts import describe_mismatch


def test_describe_mismatch() -> None:
    expected = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "b": torch.zeros(1)}
    assert describe_mismatch(expected, {k: v.clone() for k, v in expected.items()}) is None
    given = {"a.weight": torch.zeros(4, 3), "b": torch.zeros(1), "c": torch.zeros(5)}
    text = describe_mismatch(expected, given)
    assert text == (
        "1 missing keys (e.g. a.bias); 1 unexpected keys (e.g. c); "
        "1 tensors with other shapes (e.g. a.weight (4, 3) vs (2, 3))"
    )
