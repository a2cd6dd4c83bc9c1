"""The table of named DAEFR architectures: one frozen record per layout, keys named as the official ``ddconfig``.

========================  =========================================================================
name (aliases)            what it is
========================  =========================================================================
``release`` (``full``,    the released DAEFR models: 512x512 -> 16x16x256, 1024 codes, 9-layer
``official``)             transformer of width 512 (shapes of the official checkpoints)
``parity`` (``tiny``,     the ``daefr_tiny`` parity fixture: 64x64 -> 16x16x256, 1024 codes, the
``daefr_tiny``)           official transformer
``parity_codebook``       the ``vqgan_tiny`` / ``association_tiny`` parity fixtures: 64x64 -> 16x16x64,
(``vqgan_tiny``)          128 codes, PatchGAN ndf 8
``demo``                  ``daefr demo`` (``configs/demo``): 32x32 -> 8x8x64, 256 codes, 2 transformer
                          layers of width 128
``smoke``                 ``configs/tiny`` (CPU smoke runs, tests): 32x32 -> 16x16x32, 64 codes,
                          2 transformer layers of width 64
========================  =========================================================================

Use a name wherever an architecture is asked for (``DAEFRRestorer.from_config("demo")``,
``daefr convert --arch parity``, ``RestorationStage(arch="release")``); :func:`get_architecture` resolves
names and aliases. Official configs also carry training-only flags; :func:`drop_official_flags` is the
one place that handles them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from daefr.errors import ConfigError

__all__ = ["ALIASES", "ARCHITECTURES", "CODEBOOK_KEYS", "LAYOUT_KEYS", "OFFICIAL_TRAINING_FLAGS", "PREDICTOR_KEYS",
           "Architecture", "ConfigsByName", "architecture_names", "drop_official_flags", "get_architecture"]

#: Encoder/decoder layout keywords (official ddconfig names).
LAYOUT_KEYS = ("ch", "ch_mult", "num_res_blocks", "resolution", "attn_resolutions", "z_channels", "dropout",
               "enable_mid", "head_size")
#: Codebook keywords.
CODEBOOK_KEYS = ("embed_dim", "n_embed")
#: Fusion and code-predictor settings (fixed by the official ``DAEFRModel`` class, not in its ddconfig).
PREDICTOR_KEYS = ("fusion_heads", "n_layers", "n_head", "dim_mlp", "transformer_dim")
#: Official ddconfig flags that change the training, not the graph: accepted and dropped.
OFFICIAL_TRAINING_FLAGS = ("fix_decoder", "fix_codebook", "fix_encoder")


@dataclass(frozen=True)
class Architecture:
    """One named architecture: VQGAN layout, codebook, fusion/predictor settings and the PatchGAN width."""

    name: str
    description: str
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    resolution: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    embed_dim: int
    n_embed: int
    dropout: float = 0.0
    enable_mid: bool = True
    head_size: int = 1
    fusion_heads: int = 8
    n_layers: int = 9
    n_head: int = 8
    dim_mlp: int = 1024
    transformer_dim: int = 512
    disc_ndf: int = 64
    disc_layers: int = 3

    def _pick(self, keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: list(v) if isinstance(v := getattr(self, k), tuple) else v for k in keys}

    def layout(self) -> dict[str, Any]:
        """Encoder/decoder keywords (:data:`LAYOUT_KEYS`), JSON-able."""
        return self._pick(LAYOUT_KEYS)

    def vqgan_config(self) -> dict[str, Any]:
        """An official-style VQGAN ddconfig: layout + ``embed_dim`` + ``n_embed``."""
        return self._pick(LAYOUT_KEYS + CODEBOOK_KEYS)

    def restorer_config(self) -> dict[str, Any]:
        """The restorer's architecture keywords: VQGAN ddconfig + fusion/predictor settings."""
        return self._pick(LAYOUT_KEYS + CODEBOOK_KEYS + PREDICTOR_KEYS)

    def discriminator_config(self) -> dict[str, Any]:
        """PatchGAN keywords (``in_channels``, ``ndf``, ``n_layers``)."""
        return {"in_channels": 3, "ndf": self.disc_ndf, "n_layers": self.disc_layers}

    @property
    def input_size(self) -> int:
        """Side of the square input image (``resolution``)."""
        return self.resolution


def _table(*archs: Architecture) -> Mapping[str, Architecture]:
    return MappingProxyType({a.name: a for a in archs})


#: Every named architecture (read-only).
ARCHITECTURES: Mapping[str, Architecture] = _table(
    Architecture("release", "the released DAEFR models (512 px faces; HQ/LQ codebooks, association, restorer)",
                 ch=64, ch_mult=(1, 2, 2, 4, 4, 8), num_res_blocks=2, resolution=512, attn_resolutions=(16,),
                 z_channels=256, embed_dim=256, n_embed=1024),
    Architecture("parity", "the daefr_tiny parity fixture (64 px, official transformer)",
                 ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, resolution=64, attn_resolutions=(16,),
                 z_channels=256, embed_dim=256, n_embed=1024),
    Architecture("parity_codebook", "the vqgan_tiny / association_tiny parity fixtures (64 px, 128 codes)",
                 ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, resolution=64, attn_resolutions=(16,),
                 z_channels=64, embed_dim=64, n_embed=128, disc_ndf=8),
    Architecture("demo", "daefr demo, configs/demo (32 px, 8x8 latent, 256 codes)",
                 ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, resolution=32, attn_resolutions=(),
                 z_channels=64, embed_dim=64, n_embed=256, fusion_heads=4, n_layers=2, n_head=4, dim_mlp=256,
                 transformer_dim=128, disc_ndf=16, disc_layers=2),
    Architecture("smoke", "configs/tiny: CPU smoke runs and tests (32 px, 16x16 latent, 64 codes)",
                 ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32, attn_resolutions=(),
                 z_channels=32, embed_dim=32, n_embed=64, fusion_heads=4, n_layers=2, n_head=4, dim_mlp=128,
                 transformer_dim=64, disc_ndf=8, disc_layers=2),
)
#: Older names still accepted (configs, files and scripts that predate the table).
ALIASES: Mapping[str, str] = MappingProxyType({
    "full": "release", "official": "release", "tiny": "parity", "daefr_tiny": "parity",
    "vqgan_tiny": "parity_codebook",
})


def architecture_names(*, aliases: bool = False) -> list[str]:
    """The table's names (with ``aliases``: the old names too)."""
    return [*ARCHITECTURES, *(ALIASES if aliases else ())]


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name`` (or an alias); :class:`ConfigError` listing the names otherwise."""
    arch = ARCHITECTURES.get(ALIASES.get(name, name))
    if arch is None:
        raise ConfigError(f"unknown architecture {name!r}; use one of {', '.join(architecture_names())} "
                          f"(old names: {', '.join(ALIASES)}) or a dict of keywords")
    return arch


def drop_official_flags(config: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Remove, in place, the official ddconfig flags that do not change the graph; returns ``config``.

    ``fix_decoder``/``fix_codebook``/``fix_encoder`` (training-only) are dropped; ``double_z`` is dropped
    when false and refused when true (DAEFR never doubles the latent).
    """
    if config.pop("double_z", False):
        raise ConfigError("double_z=True is not supported (the official DAEFR models use double_z: false)")
    for key in OFFICIAL_TRAINING_FLAGS:
        config.pop(key, None)
    return config



class ConfigsByName(Mapping[str, dict[str, Any]]):
    """A read-only view of the table: name or alias -> a fresh dict from one :class:`Architecture` method.

    ``ConfigsByName("vqgan_config")["release"]`` is ``get_architecture("release").vqgan_config()``.
    """

    def __init__(self, method: str) -> None:
        self._method = method

    def __getitem__(self, name: str) -> dict[str, Any]:
        if ALIASES.get(name, name) not in ARCHITECTURES:
            raise KeyError(name)
        return dict(getattr(get_architecture(name), self._method)())

    def __iter__(self) -> Iterator[str]:
        return iter(ARCHITECTURES)

    def __len__(self) -> int:
        return len(ARCHITECTURES)
