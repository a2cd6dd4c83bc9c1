"""Table of built-in components: group -> name -> (lazy import target, one-line description).

Nothing here is imported until a component is built, so listing stays cheap and works from a
source checkout without reinstalling. Plugins add entries through the `daefr.<group>` entry points.
"""

from __future__ import annotations

BUILTINS: dict[str, dict[str, tuple[str, str]]] = {
    "encoders": {
        "vqgan": ("daefr.nn.vqgan:Encoder", "VQGAN encoder (official DAEFR layout and numerics)"),
    },
    "decoders": {
        "vqgan": ("daefr.nn.vqgan:Decoder", "VQGAN decoder (official DAEFR layout and numerics)"),
    },
    "codebooks": {
        "vq": ("daefr.nn.quantizer:VectorQuantizer", "vector quantizer, legacy loss ordering, straight-through (official)"),
        "cosine": ("daefr.nn.codebooks:CosineCodebook", "l2-normalised (cosine-similarity) codebook"),
        "ema": ("daefr.nn.codebooks:EMACodebook", "EMA-updated codebook with dead-code restart"),
    },
    "associations": {
        "patch_clip": ("daefr.losses.association:PatchCLIPLoss", "symmetric patch-level CLIP loss between HQ and LQ features (official)"),
    },
    "fusions": {
        "cross_attention": ("daefr.nn.fusion:CrossAttentionFusion",
                            "multi-head cross-attention, LQ queries HQ keys/values, residual on HQ (official)"),
        "single_branch": ("daefr.nn.fusion:SingleBranchFusion",
                          "no fusion: one encoder's latent only (branch: hq | lq), for single-encoder ablations"),
    },
    "predictors": {
        "transformer": ("daefr.nn.transformer:CodeTransformer",
                        "9-layer pre-LN code-prediction transformer (official layout)"),
    },
    "discriminators": {
        "patchgan": ("daefr.nn.patchgan:PatchGANDiscriminator", "PatchGAN discriminator with BatchNorm (official layout)"),
    },
    "degradations": {
        "degradation": ("daefr.data.degradation:Degradation", "batched blur/downscale/noise/JPEG degradation configured by ranges"),
        "daefr_small": ("daefr.data.degradation:daefr_small", "DAEFR stages 1-2: sigma 0.1-10, scale 0.8-8, noise 0-20, JPEG 60-100"),
        "daefr_large": ("daefr.data.degradation:daefr_large", "DAEFR stage 3: sigma 0.1-15, scale 0.8-30, noise 0-20, JPEG 30-100"),
        "codeformer": ("daefr.data.degradation:codeformer", "CodeFormer stage 2/3: sigma 1-15, scale 4-30, noise 0-20, JPEG 30-80"),
        "gfpgan": ("daefr.data.degradation:gfpgan", "GFPGAN v1: sigma 0.1-10, scale 0.8-8, noise 0-20, JPEG 60-100, colour jitter, gray"),
    },
    "datasets": {
        "folder": ("daefr.data.sources:FolderSource", "folder of face images (recursive), HQ only"),
        "paired_folder": ("daefr.data.sources:PairedFolderSource", "test set with lq/ and gt/ sub-folders"),
        "shards": ("daefr.data.sources:ShardSource", "WebDataset tar shards: paths, {a..b} patterns, pipe:, fsspec URLs"),
    },
    "losses": {
        "lpips": ("daefr.losses.lpips:LPIPS", "LPIPS perceptual distance (VGG16 + linear heads, weights from files)"),
        "vqgan": ("daefr.losses.vqgan_loss:VQGANLoss", "L1 + LPIPS + adaptive hinge PatchGAN + VQ loss (codebook stages)"),
    },
    "face_detectors": {
        "dlib_hog": ("daefr.inference.detection:DlibHogDetector",
                     "dlib HOG detector + dlib 68/5-point landmarks (CPU, offline, daefr[faces])"),
        "dlib_cnn": ("daefr.inference.detection:DlibCnnDetector",
                     "dlib CNN (MMOD) detector + dlib landmarks; slow on CPU (daefr[faces])"),
        "retinaface_resnet50": ("daefr.inference.retinaface:RetinaFaceDetector",
                                "RetinaFace-ResNet50 + 5 landmarks, facexlib weights from a path (official pipeline)"),
    },
    "upsamplers": {
        "bicubic": ("daefr.inference.paste:BicubicUpsampler", "plain bicubic background resize (OpenCV)"),
        "lanczos": ("daefr.inference.paste:LanczosUpsampler", "plain Lanczos background resize (OpenCV)"),
    },
}
