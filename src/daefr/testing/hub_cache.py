"""Build a Hugging Face Hub cache on disk exactly as ``huggingface_hub`` lays it out, for offline tests.

``<cache>/models--OWNER--REPO/blobs/<etag>`` holds the bytes (etag: the sha256 for LFS files, the git
blob sha1 for small ones), ``snapshots/<commit>/<FILE>`` are relative symlinks to the blobs and
``refs/<revision>`` holds the commit hash (no newline). :func:`write_tiny_daefr_release` fills it with
tiny checkpoints in the official formats under the released file names.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

DAEFR_REPO = "LIAGM/DAEFR_pretrain_model"


def repo_folder(cache_dir: str | os.PathLike[str], repo_id: str) -> Path:
    """``<cache>/models--OWNER--REPO``."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def write_hub_snapshot(
    cache_dir: str | os.PathLike[str],
    repo_id: str,
    files: Mapping[str, bytes],
    revision: str = "main",
    commit: str | None = None,
    lfs: bool = True,
) -> dict[str, Path]:
    """Write ``files`` (name in the repo -> bytes) as one snapshot; return name -> snapshot path."""
    folder = repo_folder(cache_dir, repo_id)
    if commit is None:
        h = hashlib.sha1()
        for name in sorted(files):
            h.update(name.encode() + b"\0" + files[name])
        commit = h.hexdigest()
    paths: dict[str, Path] = {}
    for name, data in files.items():
        if lfs:
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = folder / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
        paths[name] = link
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return paths


def checkpoint_bytes(state_dict: Mapping[str, torch.Tensor], **extra: Any) -> bytes:
    """A Lightning-style ``{"state_dict": ...}`` checkpoint as bytes (torch zip format)."""
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "global_step": 1, "state_dict": dict(state_dict), **extra}, buffer)
    return buffer.getvalue()


def tiny_vqgan_state(seed: int, ch: int = 32, z: int = 16, embed_dim: int = 32, n_embed: int = 16) -> dict[str, torch.Tensor]:
    """A random tiny VQGAN state dict (16 px, 2 levels) with our = the official key names."""
    from daefr.models.vqgan import VQGAN

    enc = {"name": "vqgan", "ch": ch, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16,
           "attn_resolutions": [], "z_channels": z, "enable_mid": True, "head_size": 1}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(enc, enc, {"name": "vq", "n_embed": n_embed, "embed_dim": embed_dim})
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tiny_patchgan_state(seed: int, ndf: int = 8, n_layers: int = 2) -> dict[str, torch.Tensor]:
    """A random tiny PatchGAN state dict (the ``loss.discriminator.*`` part of the released stage files)."""
    from daefr.nn.patchgan import PatchGANDiscriminator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PatchGANDiscriminator(ndf=ndf, n_layers=n_layers)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_tiny_daefr_release(
    cache_dir: str | os.PathLike[str], final_arch: str | dict[str, Any] | None = None, revision: str = "main"
) -> dict[str, Path]:
    """The four released file names with tiny official-format contents, in one snapshot of the DAEFR repo.

    Codebooks: ``vqvae.*`` (:func:`tiny_vqgan_state`) + ``loss.discriminator.*`` (:func:`tiny_patchgan_state`);
    association: ``vqvae.*`` + ``vqvae_LQ.*`` + both PatchGANs + ``logit_scale``; final model (only when ``final_arch`` is given): the official final-stage layout.
    """
    hq, lq, a_hq, a_lq = (tiny_vqgan_state(seed) for seed in (1, 2, 3, 4))
    disc = {f"discriminator.{k}": v for k, v in tiny_patchgan_state(6).items()}
    files = {
        "HQ_codebook.ckpt": checkpoint_bytes({**{f"vqvae.{k}": v for k, v in hq.items()},
                                              **{f"loss.{k}": v for k, v in disc.items()}}),
        "LQ_codebook.ckpt": checkpoint_bytes({**{f"vqvae.{k}": v for k, v in lq.items()},
                                              **{f"loss.{k}": v for k, v in disc.items()}}),
        "Association_stage.ckpt": checkpoint_bytes({**{f"vqvae.{k}": v for k, v in a_hq.items()},
                                                    **{f"vqvae_LQ.{k}": v for k, v in a_lq.items()},
                                                    **{f"loss.{k}": v for k, v in disc.items()},
                                                    **{f"loss_LQ.{k}": v for k, v in disc.items()},
                                                    "logit_scale": torch.tensor(2.6592600345611572)}),
    }
    if final_arch is not None:
        from daefr.testing.daefr_tiny import random_official_state_dict

        files["DAEFR_model.ckpt"] = checkpoint_bytes(random_official_state_dict(final_arch, seed=5))
    return write_hub_snapshot(cache_dir, DAEFR_REPO, files, revision=revision)


def isolated_hub_env(monkeypatch: Any, root: str | os.PathLike[str]) -> dict[str, Path]:
    """Point every weights cache under ``root`` and keep the process off the internet (pytest ``monkeypatch``).

    ``HF_HOME`` / ``TORCH_HOME`` go under ``root``; ``HF_ENDPOINT`` is a closed port on 127.0.0.1; host
    name lookups other than the loopback fail at once, so nothing can reach the network by accident.
    Returns ``{"hub": Hub cache, "urls": torch.hub checkpoint folder}``.
    """
    import socket

    import huggingface_hub.constants as hc

    from daefr.utils import hub

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed when the block ends
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "DAEFR_WEIGHTS_DIR", "HF_TOKEN",
                hub.TIMEOUT_ENV):
        monkeypatch.delenv(var, raising=False)
    base = Path(root)
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_DISABLE_TELEMETRY", True)  # no user-agent side requests
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, f"tests stay offline: no lookup of {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    hub._VERIFIED.clear()
    return {"hub": base / "hf" / "hub", "urls": base / "torch" / "hub" / "checkpoints"}
