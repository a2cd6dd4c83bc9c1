"""VQGAN and PatchGAN settings by architecture name (views of :mod:`daefr.models.architectures`).

``VQGAN_PRESETS[name]`` is the official-style VQGAN ddconfig of a named architecture (``release``,
``parity``, ``parity_codebook``, ``demo``, ``smoke``; old names such as ``official`` still work) and
``DISCRIMINATOR_PRESETS[name]`` its PatchGAN keywords. :func:`build_vqgan` builds a :class:`VQGAN`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daefr.models.architectures import ConfigsByName, drop_official_flags, get_architecture
from daefr.models.vqgan import VQGAN

__all__ = ["DISCRIMINATOR_PRESETS", "VQGAN_PRESETS", "build_vqgan", "vqgan_preset"]

#: Architecture name -> VQGAN ddconfig (a fresh dict per lookup).
VQGAN_PRESETS: Mapping[str, dict[str, Any]] = ConfigsByName("vqgan_config")
#: Architecture name -> PatchGAN keywords (official: ndf 64, 3 layers).
DISCRIMINATOR_PRESETS: Mapping[str, dict[str, Any]] = ConfigsByName("discriminator_config")


def vqgan_preset(name: str) -> dict[str, Any]:
    """The VQGAN ddconfig of the architecture called ``name`` (:class:`ConfigError` when unknown)."""
    return get_architecture(name).vqgan_config()


def build_vqgan(preset: str | Mapping[str, Any] = "release", **overrides: Any) -> VQGAN:
    """Build a :class:`VQGAN` from an architecture name or an official ddconfig-style dict, plus overrides."""
    config = vqgan_preset(preset) if isinstance(preset, str) else dict(preset)
    config.update(overrides)
    return VQGAN.from_official_config(**drop_official_flags(config))
