"""The example plugin's components, reached only through entry points, honour daefr's contracts."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from daefr.registry import Registry
from daefr.testing.degradations import check_degradation
from daefr.testing.networks import check_encoder


def test_plugin_components_come_from_the_distribution() -> None:
    registry = Registry()
    for group, name in (("datasets", "text_crops"), ("degradations", "scan"), ("encoders", "plain_conv")):
        entry = registry.entry(group, name)
        assert entry.source == "daefr-example-domain" and not entry.builtin, (group, name)


def test_text_crops_are_deterministic_and_split_into_units() -> None:
    source = Registry().build("datasets", {"name": "text_crops", "count": 10, "size": 32, "unit_size": 4})
    units = source.units()
    assert [u.count for u in units] == [4, 4, 2]
    samples = [s for u in units for s in source.read(u)]
    assert [k for k, _ in samples] == [f"text-{i:06d}" for i in range(10)]
    again = dict(source.read(units[1]))
    assert again["text-000005"]["png"] == dict(samples)["text-000005"]["png"]
    image = np.asarray(Image.open(io.BytesIO(samples[0][1]["png"])))
    assert image.shape == (32, 32, 3)
    assert image.min() < 100 < 200 < image.max(), "dark ink on light paper"


def test_scan_degradation_conforms_and_degrades() -> None:
    degradation = Registry().build("degradations", {"name": "scan", "noise_range": [2.0, 4.0]})
    check_degradation(degradation)
    hq = torch.zeros(2, 3, 32, 32)
    hq[:, :, :, 16:] = 1.0
    out = degradation(hq, generator=torch.Generator().manual_seed(3))
    assert (out.lq - hq).abs().mean() > 0.02, "the degradation changed the image"
    assert set(out.params) == {"sigma", "fade", "speckle", "noise", "noise_seed"}


def test_plain_conv_encoder_conforms() -> None:
    encoder = Registry().build("encoders", {"name": "plain_conv", "ch": 32, "ch_mult": [1, 2], "z_channels": 16})
    check_encoder(encoder)
    assert encoder(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 16, 16)
