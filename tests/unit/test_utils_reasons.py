"""One-line reasons from exceptions (daefr.utils.reasons)."""

from __future__ import annotations

import pickle

from daefr.errors import ImageReadError
from daefr.utils.reasons import one_line_reason, refused_pickle_global


def test_one_line_reason_picks_specific_line() -> None:
    torch_like = pickle.UnpicklingError(
        "Weights only load failed. Re-running `torch.load` ...\n\n\n"
        "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\n"
        "Check the documentation of torch.load to learn more"
    )
    assert one_line_reason(torch_like) == (
        "UnpicklingError: Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
    )
    assert refused_pickle_global(torch_like) == "posix.system"
    assert refused_pickle_global(ValueError("nothing here")) is None
    assert one_line_reason(ImageReadError("a.png: empty file (0 bytes)")) == "a.png: empty file (0 bytes)"
    assert one_line_reason(FileNotFoundError(2, "No such file or directory", "x")) == (
        "FileNotFoundError: No such file or directory"
    )
    long = one_line_reason(ValueError("x" * 1000))
    assert len(long) == 300 and long.endswith("...")
    assert one_line_reason(RuntimeError()) == "RuntimeError"
