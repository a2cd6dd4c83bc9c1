"""Loading and saving the DAEFR restorer: official final-stage checkpoints and our safetensors files.

Public API (names kept stable for other tools):

* :func:`restorer_from_official` -- official-layout final-stage state dict -> :class:`DAEFRRestorer`;
* :func:`load_restorer` (also ``daefr.load_restorer``) -- our safetensors export or an official
  ``DAEFR_model.ckpt`` -> restorer in eval mode;
* :func:`save_restorer` -- restorer -> safetensors file with its architecture (the one writer of restorer files);
* :func:`infer_official_arch` -- architecture keywords read off an official state dict's shapes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from daefr.errors import CheckpointError, ConfigError, UnsafeFileError, WeightsNotFoundError
from daefr.interop.keymap_daefr import is_daefr_final_state_dict, load_official_into_restorer
from daefr.interop.official_reader import check_float_weights, read_official_checkpoint
from daefr.models.restorer import DAEFRRestorer, restorer_arch
from daefr.registry import check_file_spec, reading_file
from daefr.utils.state_dicts import compare_state_dicts

__all__ = ["infer_official_arch", "infer_vqgan_arch", "load_restorer", "read_restorer_metadata", "restorer_from_official",
           "save_restorer"]

#: Bytes a restorer built from a file's architecture may take beyond the file's own size when strict
#: (every weight comes from the file, so a bigger model means the metadata is wrong or hostile).
STRICT_SLACK_BYTES = 1 << 20
#: Non-strict loads may initialise missing weights: the model may take this many times the file size.
LOOSE_FACTOR = 4
#: Safetensors metadata written by :func:`save_restorer` (``arch`` holds the JSON architecture).
FORMAT_NAME = "daefr.restorer"
FORMAT_VERSION = "1"
_DOWNLOAD_HINT = (
    "use the released model by name (`--weights daefr`; `daefr weights download daefr` fetches it ahead), or "
    "download DAEFR_model.ckpt from the official DAEFR release (github.com/LIAGM/DAEFR) and pass its path"
)


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Tensor]:
    inner = state_dict.get("state_dict") if "state_dict" in state_dict else None
    return inner if isinstance(inner, Mapping) else state_dict


def _encoder_layout(sd: Mapping[str, Tensor], enc: str) -> dict[str, Any]:
    """Layout of the official encoder under prefix ``enc``; ``attn_levels`` lists levels with attention."""
    ch = int(sd[enc + "conv_in.weight"].shape[0])
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(re.escape(enc) + r"down\.(\d+)\.", k))})
    if not levels:
        raise KeyError(enc + "down.0.*")
    return {
        "ch": ch,
        "ch_mult": [int(sd[f"{enc}down.{i}.block.0.conv2.weight"].shape[0]) // ch for i in levels],
        "num_res_blocks": len({m.group(1) for k in sd
                               if (m := re.match(re.escape(enc) + r"down\.0\.block\.(\d+)\.", k))}),
        "attn_levels": [i for i in levels if f"{enc}down.{i}.attn.0.q.weight" in sd],
        "z_channels": int(sd[enc + "conv_out.weight"].shape[0]),
        "enable_mid": any(k.startswith(enc + "mid.") for k in sd),
    }


def _with_resolution(layout: dict[str, Any], grid: int) -> dict[str, Any]:
    """Replace ``attn_levels`` by ``resolution`` and ``attn_resolutions`` for a latent grid of ``grid``."""
    out = dict(layout)
    levels = out.pop("attn_levels")
    out["resolution"] = resolution = grid * 2 ** (len(out["ch_mult"]) - 1)
    out["attn_resolutions"] = sorted({resolution // 2**i for i in levels}, reverse=True)
    return out


def infer_official_arch(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Architecture keywords of an official final-stage state dict, read off its shapes.

    ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``resolution`` (from the position
    embedding's token count), ``z_channels``, ``embed_dim``, ``n_embed``, ``enable_mid``, ``n_layers``,
    ``dim_mlp``, ``transformer_dim``. Head counts cannot be seen in shapes: they keep the official values.
    Raises :class:`CheckpointError` when a key it needs is absent.
    """
    sd = _unwrap(state_dict)
    try:
        tokens = int(sd["position_emb"].shape[0])
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise CheckpointError(f"position_emb has {tokens} tokens, not a square grid; pass the architecture")
        arch = _with_resolution(_encoder_layout(sd, "vqvae.encoder."), grid)
        codebook = sd["vqvae.Fixed_quantize.embedding.weight"]
        arch.update(
            embed_dim=int(codebook.shape[1]), n_embed=int(codebook.shape[0]),
            n_layers=len({m.group(1) for k in sd if (m := re.match(r"ft_layers\.(\d+)\.", k))}),
            dim_mlp=int(sd["ft_layers.0.linear1.weight"].shape[0]), transformer_dim=int(sd["feat_emb.weight"].shape[0]),
        )
        return arch
    except KeyError as exc:
        raise CheckpointError(f"not an official DAEFR final-stage state dict: key {exc} is missing") from None


def infer_vqgan_arch(state_dict: Mapping[str, Tensor], prefix: str = "vqvae.",
                     loss_prefix: str = "loss.") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(VQGAN ddconfig, PatchGAN settings or None) of an official codebook/association branch, from shapes.

    A VQGAN state dict does not record its training resolution; the layout is the same for every
    resolution that puts the attention blocks on the same levels, so the one giving a 16x16 latent
    (the official choice) is reported.
    """
    sd = _unwrap(state_dict)
    try:
        arch = _with_resolution(_encoder_layout(sd, prefix + "encoder."), 16)
        codebook = sd[prefix + "quantize.embedding.weight"]
        arch.update(embed_dim=int(codebook.shape[1]), n_embed=int(codebook.shape[0]))
    except KeyError as exc:
        raise CheckpointError(f"not an official VQGAN state dict under {prefix!r}: key {exc} is missing") from None
    first = sd.get(loss_prefix + "discriminator.main.0.weight")
    if first is None:
        return arch, None
    n_layers = len({k for k in sd if k.startswith(loss_prefix + "discriminator.main.") and k.endswith(".running_mean")})
    return arch, {"in_channels": int(first.shape[1]), "ndf": int(first.shape[0]), "n_layers": n_layers}


def restorer_from_official(state_dict: Mapping[str, Tensor], *, preset: str | None = None, fast: bool = False,
                           strict: bool = True, **arch: Any) -> DAEFRRestorer:
    """Our restorer from an official final-stage state dict (keys as in ``official_keys.json``).

    ``arch`` keywords are named as in the official config (``ch``, ``ch_mult``, ``num_res_blocks``,
    ``resolution``, ``attn_resolutions``, ``z_channels``, ``embed_dim``, ``n_embed``, ``n_head``, ...). They
    override ``preset`` (an architecture name: ``release``, ``parity``, ...) when one is given, else the architecture read off the shapes
    (:func:`infer_official_arch`; the released file gives the official full size). Every key is accounted
    for: training-only keys (target branch, association codebooks) are reported as not loaded, and with
    ``strict`` any missing, unexpected or mis-shaped key raises :class:`CheckpointError`. The mapping
    report is attached as ``restorer.load_report``. Returns the restorer in eval mode.
    """
    sd = _unwrap(state_dict)
    check_float_weights(sd, "the official checkpoint")  # an integer weight would be cast silently
    try:
        if preset is None and is_daefr_final_state_dict(sd):
            cfg = restorer_arch("release", **{**infer_official_arch(sd), **arch})  # given keywords win
        else:
            cfg = restorer_arch(preset, **arch)
    except (TypeError, ValueError) as exc:  # e.g. --arch '{"ch_mult": ["x"]}'
        raise ConfigError(f"architecture keywords {arch} are not usable: {exc}; give numbers where the official "
                          "config has numbers") from None
    # no size bound here: the architecture is the caller's or read off the tensors' own shapes
    restorer = _build(cfg, fast, strict)
    report = load_official_into_restorer(restorer, sd, strict=strict)
    restorer.load_report = report
    check_finite_weights(restorer.state_dict(), "the official checkpoint")
    return restorer.eval()


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def _build(cfg: dict[str, Any], fast: bool, strict: bool, source_bytes: int | None = None,
           where: str = "") -> DAEFRRestorer:
    """The restorer for ``cfg``; when every weight will be loaded (strict), skip the random init.

    ``source_bytes``: bytes of weights available in the file; the model is first built on the meta
    device (no memory) and refused with :class:`UnsafeFileError` when it would need more than that
    (plus :data:`STRICT_SLACK_BYTES`; ``LOOSE_FACTOR`` times as much when not strict).
    """
    try:
        with torch.device("meta"):
            shell = DAEFRRestorer.from_config(cfg, fast=fast)
    except (TypeError, ValueError) as exc:  # e.g. --arch '{"ch": "x"}': one line, not a traceback
        raise ConfigError(f"cannot build the restorer architecture ({type(exc).__name__}: {exc}); check the "
                          "architecture keywords (numbers where the official config has numbers)") from None
    if source_bytes is not None:
        need = _tensor_bytes([*shell.parameters(), *shell.buffers()])
        limit = source_bytes + STRICT_SLACK_BYTES if strict else LOOSE_FACTOR * source_bytes + (256 << 20)
        if need > limit:
            raise UnsafeFileError(
                f"{where}: refused: its architecture needs {need / 2**20:,.1f} MiB of weights but the file holds "
                f"only {source_bytes / 2**20:,.1f} MiB (size limit hit: the architecture metadata is wrong or "
                "hostile); nothing was allocated"
            )
    if not strict:
        return DAEFRRestorer.from_config(cfg, fast=fast)
    # torch.empty rather than Module.to_empty: the latter imports torch._refs (about 2 s) on first use
    return shell._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))


def check_finite_weights(state: Mapping[str, Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` when a floating-point weight of ``state`` holds NaN or Inf."""
    for key, value in state.items():
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{where}: weight {key!r} holds {bad} NaN/Inf value(s); the file is damaged "
                                  "(re-download or re-export it)")


def save_restorer(restorer: DAEFRRestorer, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``restorer``'s weights to a safetensors file (atomically) with its architecture in the metadata.

    Metadata: ``format`` = ``daefr.restorer``, ``format_version``, ``daefr_version``, ``arch`` (JSON of
    ``restorer.arch``). Read it back with :func:`load_restorer`.
    """
    if restorer.arch is None:
        raise ConfigError(
            "this restorer was assembled from modules and has no architecture record; build it with "
            "DAEFRRestorer.from_config(...) (or set .arch to its from_config keywords) before saving"
        )
    from daefr import __version__
    from daefr.utils.io import atomic_save_safetensors

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in restorer.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "daefr_version": __version__,
                "arch": json.dumps(restorer.arch, sort_keys=True)}
    return atomic_save_safetensors(tensors, path, metadata=metadata, overwrite=overwrite)


def read_restorer_metadata(path: str | Path) -> dict[str, str] | None:
    """The safetensors metadata of ``path`` when it is a daefr restorer file, else None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception:
        return None
    return dict(meta) if meta.get("format") == FORMAT_NAME else None


def load_restorer(path: str | Path, *, fast: bool = False, device: str | torch.device | None = None,
                  strict: bool = True, preset: str | None = None, **arch: Any) -> DAEFRRestorer:
    """Load a restorer from our safetensors export or an official final-stage checkpoint (``.ckpt``).

    Our files carry their architecture (``arch`` keywords override single values). Official files use
    ``preset``/``arch`` when given, else the architecture read off their shapes (released file: the
    official full size). ``fast`` switches on the fast path; ``device`` moves the model. Eval mode.
    ``path`` is a weights spec: a file, a name (``daefr``), an ``hf://`` URI or a URL (see docs/weights.md).
    """
    from daefr.utils.weights import resolve_weights_spec

    try:
        path = resolve_weights_spec(path, "restorer weights")
    except WeightsNotFoundError as exc:
        if "daefr weights download" in str(exc):
            raise
        raise WeightsNotFoundError(f"{exc}; {_DOWNLOAD_HINT}") from None
    if not path.is_file():
        raise WeightsNotFoundError(f"restorer weights not found: {path}; {_DOWNLOAD_HINT}")
    meta = read_restorer_metadata(path)
    if meta is not None:
        try:
            saved_arch = json.loads(meta["arch"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: daefr restorer file with unreadable architecture metadata ({exc})") from None
        if not isinstance(saved_arch, dict):
            raise CheckpointError(f"{path}: the architecture metadata is a {type(saved_arch).__name__}, not a mapping")
        check_file_spec(saved_arch, str(path), "arch")  # no class path from a stranger's file
        if preset is not None:
            raise ConfigError(f"{path} records its own architecture; 'preset' applies to official checkpoints only")
        try:
            restorer_arch(saved_arch)
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: unusable architecture metadata: {exc}") from None
        try:
            cfg = restorer_arch(saved_arch, **arch)
        except (TypeError, ValueError) as exc:  # the caller's overrides (--arch)
            raise ConfigError(f"architecture keywords {arch} are not usable: {exc}; give numbers where the "
                              "official config has numbers") from None
        with reading_file(str(path)):
            restorer = _from_our_file(path, cfg, fast, strict)
    else:
        sd = read_official_checkpoint(path)
        if is_daefr_final_state_dict(sd):
            try:
                restorer = restorer_from_official(sd, preset=preset, fast=fast, strict=strict, **arch)
            except CheckpointError as exc:
                if str(path) in str(exc):
                    raise
                raise CheckpointError(f"{path}: {exc}") from None
        elif any(k.startswith(("lq_encoder.", "predictor.")) for k in sd):
            restorer = _load_ours(sd, restorer_arch(preset, **arch), fast, strict, str(path))
        else:
            raise CheckpointError(f"{path}: not a DAEFR final-stage model ({_kind_hint(sd)}); {_DOWNLOAD_HINT}")
    return restorer.to(device) if device is not None else restorer


def _from_our_file(path: Path, cfg: dict[str, Any], fast: bool, strict: bool) -> DAEFRRestorer:
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({type(exc).__name__}: {exc})") from None
    return _load_ours(sd, cfg, fast, strict, str(path))


def _load_ours(sd: Mapping[str, Tensor], cfg: dict[str, Any], fast: bool, strict: bool, where: str) -> DAEFRRestorer:
    try:
        restorer = _build(cfg, fast, strict, _tensor_bytes(sd.values()), where)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot build the stored architecture: {exc}") from None
    ours = restorer.state_dict()
    diff = compare_state_dicts(ours, sd)
    if strict and not diff.ok:
        raise CheckpointError(f"{where}: weights do not match the restorer architecture; {diff.summary(4)}")
    wrong = set(diff.reshaped)
    for key in sorted(set(ours) & set(sd)):
        if ours[key].is_floating_point() and not sd[key].is_floating_point():
            raise CheckpointError(f"{where}: weight {key!r} is stored as {sd[key].dtype}, not floating point; "
                                  "the file is damaged or was not written by daefr (re-export it)")
    check_finite_weights({k: sd[k] for k in sorted(set(ours) & set(sd))}, where)
    restorer.load_state_dict({k: v for k, v in sd.items() if k in ours and k not in wrong}, strict=False)
    return restorer.eval()


def _kind_hint(sd: Mapping[str, Tensor]) -> str:
    if any(k.startswith("vqvae_LQ.") for k in sd):
        return "it looks like an association-stage checkpoint"
    if any(k.startswith("vqvae.quantize.") for k in sd):
        return "it looks like a codebook-stage (VQGAN) checkpoint"
    return f"unknown layout, first keys: {', '.join(list(sd)[:3])}"
