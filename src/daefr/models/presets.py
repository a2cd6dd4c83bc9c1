"""Architecture presets, named as the official ``ddconfig`` keys.

* ``official``: the released DAEFR codebooks (HQ/LQ codebook, association stage and the VQGAN parts of
  the final model); derived from the shapes in ``official_keys.json``: 512x512 -> 16x16x256, 1024 codes.
* ``tiny``: the ``vqgan_tiny`` / ``association_tiny`` parity fixtures (64x64 -> 16x16x64, 128 codes).
* ``daefr_tiny``: the VQGAN parts of the ``daefr_tiny`` parity fixture (64x64 -> 16x16x256, 1024 codes).

``DISCRIMINATOR_PRESETS`` gives the matching PatchGAN settings (official: ndf 64, 3 layers).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from daefr.errors import ConfigError
from daefr.models.vqgan import VQGAN

__all__ = ["DISCRIMINATOR_PRESETS", "VQGAN_PRESETS", "build_vqgan", "vqgan_preset"]

VQGAN_PRESETS: dict[str, dict[str, Any]] = {
    "official": {
        "ch": 64, "ch_mult": [1, 2, 2, 4, 4, 8], "num_res_blocks": 2, "resolution": 512,
        "attn_resolutions": [16], "z_channels": 256, "embed_dim": 256, "n_embed": 1024,
        "dropout": 0.0, "enable_mid": True, "head_size": 1,
    },
    "tiny": {
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "resolution": 64,
        "attn_resolutions": [16], "z_channels": 64, "embed_dim": 64, "n_embed": 128,
        "dropout": 0.0, "enable_mid": True, "head_size": 1,
    },
    "daefr_tiny": {
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "resolution": 64,
        "attn_resolutions": [16], "z_channels": 256, "embed_dim": 256, "n_embed": 1024,
        "dropout": 0.0, "enable_mid": True, "head_size": 1,
    },
}

DISCRIMINATOR_PRESETS: dict[str, dict[str, Any]] = {
    "official": {"in_channels": 3, "ndf": 64, "n_layers": 3},
    "tiny": {"in_channels": 3, "ndf": 8, "n_layers": 3},  # the vqgan_tiny checkpoint mimic uses ndf 8
}


def vqgan_preset(name: str) -> dict[str, Any]:
    """A deep copy of the named preset (``official``, ``tiny``, ``daefr_tiny``)."""
    if name not in VQGAN_PRESETS:
        raise ConfigError(f"unknown VQGAN preset {name!r}; available: {', '.join(sorted(VQGAN_PRESETS))}")
    return copy.deepcopy(VQGAN_PRESETS[name])


def build_vqgan(preset: str | Mapping[str, Any] = "official", **overrides: Any) -> VQGAN:
    """Build a :class:`VQGAN` from a preset name or an official ddconfig-style dict, plus overrides."""
    config = vqgan_preset(preset) if isinstance(preset, str) else dict(preset)
    config.update(overrides)
    for ignored in ("double_z", "fix_decoder", "fix_codebook"):
        if config.pop(ignored, False):
            raise ConfigError(f"{ignored}=True is not supported by the daefr VQGAN")
    return VQGAN.from_official_config(**config)
