"""Issue 8: every file of the generated bad-input corpus works or gets a one-line reason; inputs unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daefr.errors import ImageReadError
from daefr.utils.batch import run_batch
from daefr.utils.images import collect_inputs, read_image
from fixtures.bad_files import expected_failures, make_bad_corpus, snapshot


def test_corpus_is_complete(tmp_path: Path) -> None:
    cases = make_bad_corpus(tmp_path)
    names = {case.name for case in cases}
    assert len(cases) >= 20 and len(names) == len(cases)
    for required in ("zero_bytes.png", "truncated.png", "truncated.jpg", "text_named.png", "one_pixel.png",
                     "gray16.png", "cmyk.jpg", "rgba.png", "gray.png", "palette.png", "exif_rotated.jpg",
                     "animated.gif", "bomb.png", "unicode ñame 顔.png", "with space.png", "unreadable.png",
                     "directory.png", "loop_a.png"):
        assert required in names, required


def test_read_image_on_whole_corpus(tmp_path: Path) -> None:
    cases = make_bad_corpus(tmp_path)
    before = snapshot(tmp_path)
    for case in cases:
        if case.works:
            image = read_image(case.path)
            assert image.shape == case.shape and image.dtype == np.uint8, case.name
        else:
            try:
                read_image(case.path)
            except ImageReadError as exc:
                message = str(exc)
                assert "\n" not in message and len(message) < 400, case.name
                assert message.startswith(str(case.path)), case.name
                assert case.reason in message, (case.name, message)
            else:
                raise AssertionError(f"{case.name} should have failed ({case.reason})")
    assert snapshot(tmp_path) == before  # nothing modified, nothing added
    pixel = {case.name: read_image(case.path) for case in cases if case.name in ("rgba.png", "animated.gif")}
    assert tuple(pixel["rgba.png"][0, 0]) == (255, 255, 255)  # transparent pixel composited on white
    assert tuple(pixel["animated.gif"][5, 5]) == (255, 0, 0)  # first frame


def test_batch_over_corpus_goes_on_and_counts(tmp_path: Path) -> None:
    cases = make_bad_corpus(tmp_path)
    before = snapshot(tmp_path)
    paths = collect_inputs([tmp_path])
    # The folder listing reaches every case (the directory and the links included, hidden files not).
    assert {p.name for p in paths} == {case.name for case in cases} | {"loop_b.png"}
    result = run_batch(paths, read_image)
    summary = result.summary
    assert summary.failed == expected_failures(cases) + 1  # loop_b.png is the other end of the loop
    assert summary.ok == len(result.results) == sum(case.works for case in cases)
    assert summary.exit_code == 1
    assert all("\n" not in f.reason for f in summary.failures)
    assert snapshot(tmp_path) == before
