"""Initialising a stage from earlier stages' checkpoints (ours or the official files).

Layouts recognised by key prefix (the VQGAN's own key names are the official ones in both):

=========================  ====================================  =========================================
checkpoint                 autoencoder keys                      discriminator keys
=========================  ====================================  =========================================
ours, CodebookStage        ``vqgan.*``                           ``loss.discriminator.*``
ours, AssociationStage     ``hq.*`` / ``lq.*``                   ``loss_hq.discriminator.*`` / ``loss_lq.``
official codebook stage    ``vqvae.*``                           ``loss.discriminator.*``
official association       ``vqvae.*`` (HQ) / ``vqvae_LQ.*`` (LQ)  ``loss.discriminator.*`` / ``loss_LQ.``
=========================  ====================================  =========================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from daefr.errors import CheckpointError
from daefr.interop.keymap import ASSOCIATION_STAGE_KEYMAP, CODEBOOK_STAGE_KEYMAP, KeyMap, load_official

log = logging.getLogger(__name__)

Branch = Literal["hq", "lq"]

# branch -> ordered candidate (autoencoder prefix, discriminator prefix) pairs
_LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "hq": [("hq.", "loss_hq.discriminator."), ("vqgan.", "loss.discriminator."), ("vqvae.", "loss.discriminator.")],
    "lq": [("lq.", "loss_lq.discriminator."), ("vqvae_LQ.", "loss_LQ.discriminator."),
           ("vqgan.", "loss.discriminator."), ("vqvae.", "loss.discriminator.")],
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint (Lightning ckpt, official ckpt, state dict or safetensors).

    ``path`` is a weights spec: a file, a short name such as ``daefr-hq-codebook``, an
    ``hf://OWNER/REPO/FILE[@REVISION]`` URI or a URL (see :func:`daefr.utils.weights.resolve_weights_spec`).
    """
    from daefr.interop.official_reader import read_official_checkpoint
    from daefr.utils.weights import resolve_weights_spec

    return read_official_checkpoint(resolve_weights_spec(path, "checkpoint to initialise from"))


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def autoencoder_weights(
    sd: Mapping[str, torch.Tensor], branch: Branch, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """(VQGAN state dict, discriminator state dict, matched prefix) of one branch of a stage checkpoint."""
    for ae_prefix, disc_prefix in _LAYOUTS[branch]:
        ae = _strip(sd, ae_prefix)
        if ae_prefix == "vqvae." and any(k.startswith(("HQ_", "Fixed_")) for k in ae):
            continue  # a final DAEFR model, not a codebook/association checkpoint
        if ae:
            return ae, _strip(sd, disc_prefix), ae_prefix
    prefixes = sorted({k.split(".", 1)[0] for k in sd})
    raise CheckpointError(
        f"{source}: no {branch.upper()} autoencoder weights found (top-level prefixes: {prefixes}); expected a "
        "codebook or association checkpoint (ours or official)"
    )


def load_into(module: nn.Module, weights: Mapping[str, torch.Tensor], what: str, strict: bool = True) -> None:
    """``module.load_state_dict(weights)`` with a one-line :class:`CheckpointError` on mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{what}: {len(wrong)} tensors have other shapes than this configuration, e.g. {k!r} "
            f"{tuple(weights[k].shape)} vs {tuple(own[k].shape)}; does the architecture in the config match?"
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{what}: {len(missing)} missing keys (e.g. {missing[:2]}) and {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:2]})"
        )
    module.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def _official_keymap(prefix: str, branch: Branch) -> tuple[KeyMap, str, str]:
    """(keymap, autoencoder namespace, discriminator namespace) of an official layout."""
    if prefix == "vqvae_LQ.":
        return ASSOCIATION_STAGE_KEYMAP, "lq", "lq_discriminator"
    return CODEBOOK_STAGE_KEYMAP, "vqgan", "discriminator"


def init_autoencoder(
    vqgan: nn.Module, discriminator: nn.Module | None, path: str | Path, branch: Branch
) -> str:
    """Load one branch of ``path`` into ``vqgan`` (strict) and, when shapes match, ``discriminator``.

    Official files go through :mod:`daefr.interop.keymap` (every key accounted for); ours by prefix.
    """
    sd = read_state_dict(path)
    ae, disc, prefix = autoencoder_weights(sd, branch, source=str(path))
    if prefix in ("vqvae.", "vqvae_LQ."):
        keymap, ae_ns, disc_ns = _official_keymap(prefix, branch)
        if prefix == "vqvae." and any(k.startswith("vqvae_LQ.") for k in sd):
            keymap, ae_ns, disc_ns = ASSOCIATION_STAGE_KEYMAP, "hq", "hq_discriminator"
        modules: dict[str, nn.Module] = {ae_ns: vqgan}
        if discriminator is not None and disc:
            modules[disc_ns] = discriminator
        try:
            load_official(keymap, sd, modules, strict=True, context=str(path))
        except CheckpointError as exc:
            if disc_ns not in modules:
                raise
            log.warning("discriminator not initialised from %s: %s", path, exc)
            load_official(keymap, sd, {ae_ns: vqgan}, strict=True, context=str(path))
    else:
        load_into(vqgan, ae, f"{path} ({prefix}*)")
        if discriminator is not None and disc:
            try:
                load_into(discriminator, disc, f"{path} (discriminator)")
            except CheckpointError as exc:
                log.warning("discriminator not initialised from %s: %s", path, exc)
    log.info("initialised %s autoencoder from %s (%s*, %d tensors)", branch.upper(), path, prefix, len(ae))
    return prefix
