"""Convert official DAEFR checkpoints (any of the four kinds) to safetensors with our key names.

* ``daefr`` (``DAEFR_model.ckpt``): a restorer file (``format`` = ``daefr.restorer``), readable by
  ``daefr.load_restorer``; the 174 training-only keys (target branch, association codebooks) are
  reported as not exported.
* ``codebook`` (``HQ_codebook.ckpt`` / ``LQ_codebook.ckpt``) and ``association``
  (``Association_stage.ckpt``): every tensor under our namespaced keys (``vqgan.*``,
  ``discriminator.*``, ``lpips.*``; association: ``hq.*``, ``lq.*``, ``hq_discriminator.*``, ...), with
  ``format`` = ``daefr.converted``, ``kind`` and the VQGAN architecture (JSON) in the metadata.

Shapes are checked against our modules built on the meta device; every key is accounted for; weights
must be floating point (:func:`~daefr.interop.official_reader.check_float_weights`) and finite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from daefr.errors import CheckpointError, ConfigError
from daefr.interop.keymap import ASSOCIATION_STAGE_KEYMAP, CODEBOOK_STAGE_KEYMAP, KeyMap, MappingReport
from daefr.interop.keymap_daefr import is_daefr_final_state_dict
from daefr.interop.official_reader import check_float_weights, read_official_checkpoint
from daefr.interop.restorer_io import (
    check_finite_weights,
    infer_vqgan_arch,
    restorer_from_official,
    save_restorer,
)
from daefr.models.architectures import architecture_names, get_architecture

__all__ = ["KINDS", "ConversionResult", "convert_official", "detect_kind", "parse_arch"]

KINDS = ("auto", "daefr", "codebook", "association")
CONVERTED_FORMAT = "daefr.converted"


@dataclass
class ConversionResult:
    """What :func:`convert_official` wrote: ``kind``, output ``path``, tensor count and the mapping report."""

    kind: str
    path: Path
    n_tensors: int
    report: MappingReport


def detect_kind(state_dict: Mapping[str, Tensor]) -> str:
    """``daefr``, ``association`` or ``codebook`` from the official key names; CheckpointError otherwise."""
    if is_daefr_final_state_dict(state_dict):
        return "daefr"
    if any(k.startswith("vqvae_LQ.") for k in state_dict) and "logit_scale" in state_dict:
        return "association"
    if "vqvae.quantize.embedding.weight" in state_dict:
        return "codebook"
    first = ", ".join(list(state_dict)[:3])
    raise CheckpointError(f"not an official DAEFR checkpoint of a known kind (first keys: {first})")


def parse_arch(value: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    """An architecture dict (or None for auto) from a name, a JSON object or a JSON/YAML file.

    A name of the architecture table (``release``, ``parity``, ...; old names too), a JSON object, a
    .json/.yaml file of keywords, or None / ``auto`` (read off the checkpoint's shapes).
    """
    if value is None or isinstance(value, Mapping):
        return None if value is None else dict(value)
    text = value.strip()
    if text == "auto":
        return None
    if text in architecture_names(aliases=True):
        return text
    if not text.startswith("{") and Path(text).is_file():
        path = Path(text)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                parsed_yaml = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"--arch file {path} is not valid YAML: {exc}") from None
            return _as_arch_dict(parsed_yaml)
        text = path.read_text(encoding="utf-8")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--arch must be auto, an architecture name ({', '.join(architecture_names())}), a JSON object or a "
            f".json/.yaml file; got {value!r} ({exc})"
        ) from None
    return _as_arch_dict(parsed)


def _as_arch_dict(parsed: Any) -> dict[str, Any]:
    if not isinstance(parsed, dict):
        raise ConfigError(f"--arch must hold a mapping of architecture keywords, got {type(parsed).__name__}")
    return parsed


def _vqgan_arch(arch: str | dict[str, Any] | None, sd: Mapping[str, Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(VQGAN ddconfig, discriminator settings) for the codebook/association kinds (None: from the shapes)."""
    release = get_architecture("release")
    if arch is None:
        vq_cfg, disc_cfg = infer_vqgan_arch(sd)
        return {**release.vqgan_config(), **vq_cfg}, disc_cfg or release.discriminator_config()
    if isinstance(arch, str):
        named = get_architecture(arch)
        return named.vqgan_config(), named.discriminator_config()
    cfg = dict(arch)
    disc = release.discriminator_config()
    if "disc_ndf" in cfg:
        disc["ndf"] = int(cfg.pop("disc_ndf"))
    return {**release.vqgan_config(), **cfg}, disc


def _targets(kind: str, vq_cfg: dict[str, Any], disc_cfg: dict[str, Any]) -> tuple[KeyMap, dict[str, nn.Module]]:
    from daefr.losses.association import PatchCLIPLoss
    from daefr.models.presets import build_vqgan
    from daefr.nn.patchgan import PatchGANDiscriminator

    with torch.device("meta"):
        if kind == "codebook":
            return CODEBOOK_STAGE_KEYMAP, {"vqgan": build_vqgan(vq_cfg),
                                           "discriminator": PatchGANDiscriminator(**disc_cfg, init_weights=False)}
        return ASSOCIATION_STAGE_KEYMAP, {
            "hq": build_vqgan(vq_cfg), "lq": build_vqgan(vq_cfg),
            "hq_discriminator": PatchGANDiscriminator(**disc_cfg, init_weights=False),
            "lq_discriminator": PatchGANDiscriminator(**disc_cfg, init_weights=False),
            "association": PatchCLIPLoss(),
        }


def _convert_stage(sd: Mapping[str, Tensor], kind: str, arch: str | dict[str, Any] | None,
                   strict: bool) -> tuple[dict[str, Tensor], MappingReport, dict[str, Any]]:
    try:
        vq_cfg, disc_cfg = _vqgan_arch(arch, sd)
        keymap, modules = _targets(kind, vq_cfg, disc_cfg)
    except (TypeError, ValueError) as exc:  # e.g. --arch '{"ch": "x"}': one line, not a traceback
        raise ConfigError(f"cannot build the {kind} architecture ({type(exc).__name__}: {exc}); check the --arch "
                          "keywords (numbers where the official config has numbers)") from None
    target = {f"{ns}.{k}": tuple(v.shape) for ns, m in modules.items() for k, v in m.state_dict().items()}
    report = keymap.report({k: tuple(v.shape) for k, v in sd.items()}, target)
    # LPIPS keys are mapped by name only (their module lives in the losses): not "missing" here
    report.missing = [k for k in report.missing if not k.startswith(("lpips.", "hq_lpips.", "lq_lpips."))]
    if strict:
        report.raise_if_incomplete(f"{kind} checkpoint (pass --arch if its architecture was not read correctly)")
    tensors = {ours: sd[key] for key, ours in {**report.mapped, **report.name_only}.items()
               if key not in report.shape_mismatches}
    return tensors, report, {"vqgan": vq_cfg, "discriminator": disc_cfg}


def convert_official(src: str | Path, dst: str | Path, *, kind: str = "auto",
                     arch: str | Mapping[str, Any] | None = None, overwrite: bool = False,
                     strict: bool = True) -> ConversionResult:
    """Read an official checkpoint safely, map its keys, and write ``dst`` (safetensors, atomically).

    ``arch``: an architecture name (``release``, ``parity``, ``parity_codebook``, ...), a dict of official
    keywords, or None (read off the shapes).
    Refuses to replace ``dst`` unless ``overwrite``.
    """
    from daefr.utils.io import atomic_save_safetensors

    if kind not in KINDS:
        raise ConfigError(f"unknown checkpoint kind {kind!r}; use one of {', '.join(KINDS)}")
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists; pass --force to replace it")
    from daefr.utils.weights import resolve_weights_spec

    sd = read_official_checkpoint(resolve_weights_spec(src, "official checkpoint"))
    check_float_weights(sd, src)  # an integer weight would be cast to float silently
    found = detect_kind(sd)
    if kind != "auto" and kind != found:
        raise CheckpointError(f"{src}: --kind {kind} was given but the file is a {found} checkpoint")
    parsed = parse_arch(arch) if isinstance(arch, str) or arch is None else dict(arch)
    if found == "daefr":
        preset = parsed if isinstance(parsed, str) else None
        keywords = parsed if isinstance(parsed, dict) else {}
        restorer = restorer_from_official(sd, preset=preset, strict=strict, **keywords)
        path = save_restorer(restorer, dst, overwrite=overwrite)
        return ConversionResult("daefr", path, len(restorer.state_dict()), restorer.load_report)
    tensors, report, cfg = _convert_stage(sd, found, parsed, strict)
    check_finite_weights(tensors, str(src))
    from daefr import __version__

    metadata = {"format": CONVERTED_FORMAT, "kind": found, "daefr_version": __version__,
                "arch": json.dumps(cfg, sort_keys=True), "source": Path(src).name}
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    path = atomic_save_safetensors(contiguous, dst, metadata=metadata, overwrite=overwrite)
    return ConversionResult(found, path, len(contiguous), report)
