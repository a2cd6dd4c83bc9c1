"""DAEFR restorer: the inference graph of the final stage, as a pure ``nn.Module``.

LQ image -> LQ encoder + quant_conv (``lq_feat``) and HQ encoder + quant_conv (``hq_feat``) ->
fusion -> code predictor (logits over the HQ codebook) -> top-1 codes -> HQ codebook lookup ->
post_quant_conv -> HQ decoder. Images are (B, 3, H, W) in [-1, 1].

Submodules (our state-dict prefixes; official key of the final-stage checkpoint in brackets):
``lq_encoder`` [vqvae.encoder], ``lq_quant_conv`` [vqvae.quant_conv], ``hq_encoder`` [vqvae.HQ_encoder],
``hq_quant_conv`` [vqvae.HQ_quant_conv], ``fusion`` [cross_attention -> fusion.attn],
``predictor`` [position_emb, feat_emb, ft_layers, idx_pred_layer], ``codebook`` [vqvae.Fixed_quantize],
``post_quant_conv`` [vqvae.post_quant_conv], ``decoder`` [vqvae.decoder].

Default numerics are the official ones (parity); ``fast=True`` (:meth:`DAEFRRestorer.set_fast`, the one
switch) turns on fused attention and blocks, argmax instead of softmax+topk, and decodes the code rows
directly (no straight-through sum). :meth:`DAEFRRestorer.forward_intermediates` is the one forward; the
training net, the inference wrapper and the export wrapper call it.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from daefr.errors import ConfigError
from daefr.models.architectures import (
    CODEBOOK_KEYS,
    LAYOUT_KEYS,
    PREDICTOR_KEYS,
    ConfigsByName,
    drop_official_flags,
    get_architecture,
)
from daefr.models.vqgan import ComponentSpec
from daefr.nn.contracts import Codebook
from daefr.nn.fast_blocks import set_fast as set_fast_blocks
from daefr.registry import REGISTRY, import_object

__all__ = ["COMPONENT_KEYS", "RESTORER_PRESETS", "DAEFRRestorer", "build_component", "restorer_arch"]

#: Restorer architectures by name or alias (views of :data:`daefr.models.architectures.ARCHITECTURES`).
RESTORER_PRESETS: Mapping[str, dict[str, Any]] = ConfigsByName("restorer_config")
#: Registry specs that may replace one component of the restorer.
COMPONENT_KEYS = ("lq_encoder", "hq_encoder", "fusion", "predictor", "codebook", "decoder")
_ARCH_KEYS = frozenset({*LAYOUT_KEYS, *CODEBOOK_KEYS, *PREDICTOR_KEYS, "in_channels", "out_ch", "beta", *COMPONENT_KEYS})


def restorer_arch(arch: str | Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete, JSON-able architecture dict from a name or keywords, plus overrides.

    Either a name of the architecture table (default ``release``) or a
    dict of keywords over ``release``, plus overrides.

    Keys: :data:`~daefr.models.architectures.LAYOUT_KEYS`, ``embed_dim``, ``n_embed``, the fusion/predictor
    settings (``fusion_heads``, ``n_layers``, ``n_head``, ``dim_mlp``, ``transformer_dim``), ``in_channels``,
    ``out_ch``, ``beta`` and optional registry specs replacing a component (:data:`COMPONENT_KEYS`).
    Official training-only flags are dropped; unknown keys raise :class:`ConfigError`.
    """
    if arch is None or isinstance(arch, str):
        base = get_architecture(arch or "release").restorer_config()
    else:
        base = {**get_architecture("release").restorer_config(), **copy.deepcopy(dict(arch))}
    base.update(copy.deepcopy(overrides))
    drop_official_flags(base)
    unknown = sorted(set(base) - _ARCH_KEYS)
    if unknown:
        raise ConfigError(f"unknown restorer architecture keys {unknown}; accepted: {', '.join(sorted(_ARCH_KEYS))}")
    for key in ("ch_mult", "attn_resolutions"):
        base[key] = [int(v) for v in base[key]]
    return base


def build_component(group: str, value: nn.Module | ComponentSpec, **defaults: Any) -> nn.Module:
    """Build ``value`` (a module or registry spec); ``defaults`` the component does not accept are dropped."""
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, str):
        factory = REGISTRY.get(group, value)
    elif "class_path" in value:
        factory = import_object(str(value["class_path"]))
    else:
        factory = REGISTRY.get(group, str(value.get("name")))
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = None  # type: ignore[assignment]
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # a plugin component need not take every official layout keyword
        defaults = {k: v for k, v in defaults.items() if k in params}
    return cast(nn.Module, REGISTRY.build(group, value, **defaults))


class DAEFRRestorer(nn.Module):
    """DAEFR inference graph: ``forward(lq (B, 3, H, W) in [-1, 1])`` -> restored (B, 3, H, W).

    Build it with :meth:`from_config` (an architecture name or official keywords) or from modules.
    The input's latent grid must have ``predictor.n_tokens`` positions (16x16 for the released model,
    i.e. 512x512 inputs); anything else raises ``ValueError`` naming the expected size.
    """

    def __init__(self, lq_encoder: nn.Module, hq_encoder: nn.Module, fusion: nn.Module, predictor: nn.Module,
                 codebook: nn.Module, decoder: nn.Module, *, fast: bool = False,
                 arch: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.lq_encoder = lq_encoder
        self.hq_encoder = hq_encoder
        self.codebook = cast(Codebook, codebook)
        embed_dim = int(self.codebook.embed_dim)
        self.lq_quant_conv = nn.Conv2d(int(getattr(lq_encoder, "z_channels")), embed_dim, 1)  # noqa: B009
        self.hq_quant_conv = nn.Conv2d(int(getattr(hq_encoder, "z_channels")), embed_dim, 1)  # noqa: B009
        self.fusion = fusion
        self.predictor = predictor
        self.post_quant_conv = nn.Conv2d(embed_dim, int(getattr(decoder, "z_channels", embed_dim)), 1)
        self.decoder = decoder
        self.downsample_factor = int(getattr(lq_encoder, "downsample_factor"))  # noqa: B009
        self.n_tokens = int(getattr(predictor, "n_tokens"))  # noqa: B009
        self.n_embed = int(self.codebook.n_embed)
        #: JSON-able architecture (set by :meth:`from_config`); ``daefr.interop.save_restorer`` writes it
        #: into the file's metadata.
        self.arch: dict[str, Any] | None = copy.deepcopy(dict(arch)) if arch is not None else None
        #: Key-mapping report (``daefr.interop.keymap.MappingReport``) when loaded from an official checkpoint.
        self.load_report: Any = None
        self.fast = False
        self.set_fast(fast)

    # ----- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, arch: str | Mapping[str, Any] | None = None, *, fast: bool = False,
                    **overrides: Any) -> DAEFRRestorer:
        """Build from an architecture name or official-style keywords, plus overrides.

        Build from an architecture name (``release``, ``parity``, ``demo``, ...; see
        :mod:`daefr.models.architectures`) or official-style keywords, plus overrides.
        """
        cfg = restorer_arch(arch, **overrides)
        f = 2 ** (len(cfg["ch_mult"]) - 1)
        if cfg["resolution"] % f:
            raise ConfigError(f"resolution {cfg['resolution']} is not divisible by the downsampling factor {f}")
        grid = cfg["resolution"] // f
        layout: dict[str, Any] = {k: cfg[k] for k in LAYOUT_KEYS}
        enc_defaults: dict[str, Any] = {**layout, "in_channels": cfg.get("in_channels", 3)}
        dec_defaults: dict[str, Any] = {**layout, "out_ch": cfg.get("out_ch", 3)}
        return cls(
            lq_encoder=build_component("encoders", cfg.get("lq_encoder", "vqgan"), **enc_defaults),
            hq_encoder=build_component("encoders", cfg.get("hq_encoder", "vqgan"), **enc_defaults),
            fusion=build_component("fusions", cfg.get("fusion", "cross_attention"),
                              channels=cfg["embed_dim"], head_size=cfg["fusion_heads"]),
            predictor=build_component("predictors", cfg.get("predictor", "transformer"),
                                 in_channels=cfg["embed_dim"], n_embed=cfg["n_embed"], n_tokens=grid * grid,
                                 embed_dim=cfg["transformer_dim"], n_layers=cfg["n_layers"],
                                 n_head=cfg["n_head"], dim_mlp=cfg["dim_mlp"], dropout=cfg["dropout"]),
            codebook=build_component("codebooks", cfg.get("codebook", "vq"), n_embed=cfg["n_embed"],
                                embed_dim=cfg["embed_dim"], **({"beta": cfg["beta"]} if "beta" in cfg else {})),
            decoder=build_component("decoders", cfg.get("decoder", "vqgan"), **dec_defaults),
            fast=fast,
            arch=cfg,
        )

    # ----- options ---------------------------------------------------------------------------
    def set_fast(self, fast: bool) -> None:
        """Switch the fast path on or off (reversible; weights unchanged).

        The one fast-path switch (reversible): fused attention and blocks, in-place activations,
        argmax top-1 and direct decoding of the code rows (:func:`daefr.nn.fast_blocks.set_fast`); off =
        the official numerics. Weights and state-dict keys are unchanged either way.
        """
        self.fast = bool(fast)
        set_fast_blocks(self, self.fast)

    @property
    def grid(self) -> int | None:
        """Side of the square latent grid (``sqrt(n_tokens)``), or None when n_tokens is not a square."""
        side = math.isqrt(self.n_tokens)
        return side if side * side == self.n_tokens else None

    @property
    def input_size(self) -> int | None:
        """Side of the square input the model expects (512 for the released model), or None."""
        return None if self.grid is None else self.grid * self.downsample_factor

    def check_input(self, lq: Tensor) -> None:
        """Raise ``ValueError`` unless ``lq`` is (B, 3, H, W) float with a latent of ``n_tokens`` positions."""
        if not isinstance(lq, Tensor) or lq.dim() != 4 or not lq.is_floating_point():
            raise ValueError(f"expected a float tensor (B, 3, H, W) in [-1, 1], got {getattr(lq, 'shape', type(lq))}")
        f = self.downsample_factor
        h, w = lq.shape[-2:]
        if h % f or w % f or (h // f) * (w // f) != self.n_tokens:
            want = f"{self.input_size}x{self.input_size}" if self.input_size else f"H*W = {self.n_tokens * f * f}"
            raise ValueError(
                f"input of {h}x{w} pixels does not fit this restorer: it needs {want} (a latent of "
                f"{self.n_tokens} positions at 1/{f} scale); resize or align the face first"
            )

    # ----- graph -----------------------------------------------------------------------------
    def encode(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> (lq_feat, hq_feat), each (B, embed_dim, h, w) after its quant_conv."""
        lq_feat = self.lq_quant_conv(self.lq_encoder(lq))
        hq_feat = self.hq_quant_conv(self.hq_encoder(lq))
        return lq_feat, hq_feat

    def top1(self, logits: Tensor) -> Tensor:
        """(B, T, n_embed) -> (B, T) int64; official ``topk(softmax(logits), 1)`` unless fast (argmax)."""
        if self.fast:
            return logits.argmax(dim=-1)
        return torch.topk(torch.softmax(logits, dim=2), 1, dim=2)[1].squeeze(-1)

    def decode_indices(self, indices: Tensor, grid: tuple[int, int], fused: Tensor | None = None) -> Tensor:
        """(B, T) codes on an (h, w) grid -> image (B, 3, H, W); ``fused`` gives the official straight-through sum."""
        quant = self.codebook.lookup(indices.reshape(indices.shape[0], *grid))
        if fused is not None and not self.fast:
            quant = fused + (quant - fused).detach()  # official decoder input (differs from quant by ~1e-7)
        return cast(Tensor, self.decoder(self.post_quant_conv(quant)))

    def forward(self, lq: Tensor, return_details: bool = False) -> Any:
        """(B, 3, H, W) in [-1, 1] -> restored (B, 3, H, W) (unclamped).

        ``return_details``: the dict of
        :meth:`forward_intermediates` instead.
        """
        details = self.forward_intermediates(lq)
        return details if return_details else details["restored"]

    def forward_intermediates(self, lq: Tensor, *, decode: bool = True) -> dict[str, Tensor]:
        """The restorer's one forward: (B, 3, H, W) in [-1, 1] -> its outputs by name.

        ``restored`` (B, 3, H, W) unclamped (absent with ``decode=False``), ``logits`` (B, T, n_embed),
        ``indices`` (B, T) int64, ``lq_feat``, ``hq_feat``, ``fused`` (B, embed_dim, h, w); T = h*w in
        raster order. The code predictor and the code choice run in float32 (also under autocast).
        """
        self.check_input(lq)
        lq_feat, hq_feat = self.encode(lq)
        fused = cast(Tensor, self.fusion(lq_feat, hq_feat))
        logits = cast(Tensor, self.predictor(fused.float() if fused.dtype != torch.float32 else fused))
        indices = self.top1(logits.float() if logits.dtype != torch.float32 else logits)
        out = {"logits": logits, "indices": indices, "lq_feat": lq_feat, "hq_feat": hq_feat, "fused": fused}
        if decode:
            out["restored"] = self.decode_indices(indices, (fused.shape[2], fused.shape[3]), fused)
        return out

    def optimize_for_inference(self, options: Any = None, **changes: Any) -> nn.Module:
        """Fast inference wrapper (converts this restorer IN PLACE); see :mod:`daefr.models.inference_options`.

        ``options``: an ``InferenceOptions`` (default: the fast path); ``changes`` override single fields,
        e.g. ``restorer.optimize_for_inference(precision="bf16", compile=True)``.
        """
        from daefr.models.inference_options import optimize_for_inference

        return optimize_for_inference(self, options, **changes)
