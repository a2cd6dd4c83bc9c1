"""Official DAEFR final-stage keys (``DAEFR_model.ckpt``, 877 keys) -> ours.

Targets are namespaced as in :class:`daefr.models.daefr_net.DAEFRNet`: ``restorer.*`` is the inference
graph (:class:`daefr.models.restorer.DAEFRRestorer`), ``target_encoder.*`` / ``target_quant_conv.*`` the
frozen HQ branch that makes the training targets (official ``Fixed_encoder`` / ``Fixed_quant_conv``),
``assoc_hq_codebook.*`` / ``assoc_lq_codebook.*`` the associated codebooks that the official forward
never uses (``HQ_quantize`` / ``LQ_quantize``). Loading into a restorer alone reports those four
groups as ``not_loaded`` (174 keys for the released model); nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from daefr.interop.keymap import KeyMap, KeyRule, MappingReport, load_official
from daefr.models.restorer import DAEFRRestorer

__all__ = [
    "DAEFR_FINAL_KEYMAP",
    "INFERENCE_NAMESPACE",
    "TRAINING_ONLY_NAMESPACES",
    "is_daefr_final_state_dict",
    "load_official_into_net",
    "load_official_into_restorer",
    "to_official_state_dict",
]

INFERENCE_NAMESPACE = "restorer"
TRAINING_ONLY_NAMESPACES = ("target_encoder", "target_quant_conv", "assoc_hq_codebook", "assoc_lq_codebook")

#: Final-stage checkpoint (official ``daefr.DAEFRModel`` with ``VQVAEGANMERGE``).
DAEFR_FINAL_KEYMAP = KeyMap(
    "DAEFR final stage (DAEFR_model)",
    [
        KeyRule("vqvae.encoder.", "restorer.lq_encoder.", note="LQ encoder (from Association_stage vqvae_LQ)"),
        KeyRule("vqvae.quant_conv.", "restorer.lq_quant_conv."),
        KeyRule("vqvae.HQ_encoder.", "restorer.hq_encoder.", note="HQ encoder applied to the LQ input"),
        KeyRule("vqvae.HQ_quant_conv.", "restorer.hq_quant_conv."),
        KeyRule("cross_attention.", "restorer.fusion.attn."),
        KeyRule("position_emb", "restorer.predictor.position_emb"),
        KeyRule("feat_emb.", "restorer.predictor.feat_emb."),
        KeyRule("ft_layers.", "restorer.predictor.ft_layers."),
        KeyRule("idx_pred_layer.", "restorer.predictor.idx_pred_layer."),
        KeyRule("vqvae.Fixed_quantize.", "restorer.codebook.", note="HQ codebook (from HQ_codebook)"),
        KeyRule("vqvae.post_quant_conv.", "restorer.post_quant_conv."),
        KeyRule("vqvae.decoder.", "restorer.decoder."),
        KeyRule("vqvae.Fixed_encoder.", "target_encoder.", note="frozen HQ encoder for the training targets"),
        KeyRule("vqvae.Fixed_quant_conv.", "target_quant_conv."),
        KeyRule("vqvae.HQ_quantize.", "assoc_hq_codebook.", note="associated HQ codebook, unused by forward"),
        KeyRule("vqvae.LQ_quantize.", "assoc_lq_codebook.", note="associated LQ codebook, unused by forward"),
    ],
)

# Keys that only the final-stage checkpoint has (a codebook or association checkpoint has none of them).
_FINAL_MARKERS = ("vqvae.Fixed_quantize.", "vqvae.HQ_encoder.", "ft_layers.", "cross_attention.")


def is_daefr_final_state_dict(keys: Mapping[str, object] | list[str]) -> bool:
    """Whether the keys look like an official DAEFR final-stage state dict (not a codebook/association one)."""
    names = list(keys)
    return all(any(k.startswith(m) for k in names) for m in _FINAL_MARKERS)


def load_official_into_restorer(restorer: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True,
                                context: str = "DAEFR final-stage checkpoint") -> MappingReport:
    """Copy an official final-stage state dict into a restorer; training-only keys end up in ``not_loaded``."""
    return load_official(DAEFR_FINAL_KEYMAP, state_dict, {INFERENCE_NAMESPACE: restorer}, strict=strict,
                         context=context)


def load_official_into_net(net: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True,
                           context: str = "DAEFR final-stage checkpoint") -> MappingReport:
    """Copy an official final-stage state dict into every part of a :class:`DAEFRNet` (all 877 keys)."""
    modules = {name: getattr(net, name) for name in (INFERENCE_NAMESPACE, *TRAINING_ONLY_NAMESPACES)}
    return load_official(DAEFR_FINAL_KEYMAP, state_dict, modules, strict=strict, context=context)


def to_official_state_dict(net: nn.Module) -> dict[str, Tensor]:
    """Official final-stage layout (877 keys for the full model) of a :class:`DAEFRNet`'s weights.

    The inverse of :data:`DAEFR_FINAL_KEYMAP`; writes checkpoints that the official code (and
    :func:`daefr.interop.restorer_from_official`) loads, e.g. tiny random models for tests and benchmarks.
    A :class:`DAEFRRestorer` alone gives the 703 inference keys (no target branch, no association codebooks).
    """
    prefix = f"{INFERENCE_NAMESPACE}." if isinstance(net, DAEFRRestorer) else ""
    inverse = sorted(((r.target, r.source) for r in DAEFR_FINAL_KEYMAP.rules if r.target), key=lambda p: -len(p[0]))
    out: dict[str, Tensor] = {}
    for key, value in net.state_dict().items():
        ours = prefix + key
        for target, source in inverse:
            if (ours.startswith(target) if target.endswith(".") else ours == target):
                out[source + ours[len(target):]] = value
                break
        else:
            raise KeyError(f"{ours!r} has no official counterpart in {DAEFR_FINAL_KEYMAP.name}")
    return out
