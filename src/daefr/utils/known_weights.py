"""The table of weights known by short name: where each file comes from, its hash and licence note.

Used by :mod:`daefr.utils.hub` (resolution, downloads) and ``daefr weights list``. Hashes are recorded
only where the source publishes one (torchvision and pytorch-fid put a sha256 prefix in the file name;
Hub files are checked against the LFS sha256 the Hub serves as their blob name).
"""

from __future__ import annotations

from dataclasses import dataclass

HF_SCHEME = "hf://"


@dataclass(frozen=True)
class KnownWeights:
    """One entry of the table of weights addressable by name."""

    name: str
    what: str
    licence: str
    hf_repo: str | None = None  # Hub repository (OWNER/REPO) ...
    hf_file: str | None = None  # ... and file in it
    url: str | None = None  # or a plain URL
    sha256: str | None = None  # full sha256 where the source publishes one
    sha256_prefix: str | None = None  # torch.hub-style prefix (published in the file name)
    file_name: str | None = None  # the name components look for in $DAEFR_WEIGHTS_DIR
    cache_name: str | None = None  # file name in torch.hub's cache when not the URL's (a generic name)

    @property
    def source(self) -> str:
        """Where the file comes from: an ``hf://`` URI or the URL."""
        if self.hf_repo and self.hf_file:
            return f"{HF_SCHEME}{self.hf_repo}/{self.hf_file}"
        return str(self.url)


_DAEFR_REPO = "LIAGM/DAEFR_pretrain_model"
_DAEFR_LICENCE = "DAEFR authors' release (github.com/LIAGM/DAEFR); check their terms before use beyond research"

KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights("daefr", "released DAEFR final model (restorer)", _DAEFR_LICENCE,
                     hf_repo=_DAEFR_REPO, hf_file="DAEFR_model.ckpt", file_name="DAEFR_model.ckpt"),
        KnownWeights("daefr-hq-codebook", "DAEFR HQ codebook stage", _DAEFR_LICENCE,
                     hf_repo=_DAEFR_REPO, hf_file="HQ_codebook.ckpt", file_name="HQ_codebook.ckpt"),
        KnownWeights("daefr-lq-codebook", "DAEFR LQ codebook stage", _DAEFR_LICENCE,
                     hf_repo=_DAEFR_REPO, hf_file="LQ_codebook.ckpt", file_name="LQ_codebook.ckpt"),
        KnownWeights("daefr-association", "DAEFR association stage", _DAEFR_LICENCE,
                     hf_repo=_DAEFR_REPO, hf_file="Association_stage.ckpt", file_name="Association_stage.ckpt"),
        KnownWeights("vgg16", "VGG16 ImageNet trunk for LPIPS (torchvision)",
                     "torchvision (BSD-3-Clause); trained on ImageNet",
                     url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af",
                     file_name="vgg16-397923af.pth"),
        KnownWeights("lpips-vgg", "LPIPS v0.1 linear heads for VGG",
                     "PerceptualSimilarity (BSD-2-Clause); no published hash: sha256 recorded on download",
                     url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
                     file_name="vgg.pth", cache_name="lpips-v0.1-vgg.pth"),
        KnownWeights("fid-inception", "FID Inception v3 (pytorch-fid)",
                     "pytorch-fid (Apache-2.0), weights ported from TensorFlow's FID Inception",
                     url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                         "pt_inception-2015-12-05-6726825d.pth",
                     sha256_prefix="6726825d", file_name="pt_inception-2015-12-05-6726825d.pth"),
        KnownWeights("arcface-resnet18", "ArcFace ResNet-18 for the identity metric (GFPGAN release)",
                     "GFPGAN release (Apache-2.0 code); no published hash: sha256 recorded on download",
                     url="https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/arcface_resnet18.pth"),
    )
}
