"""Table of built-in components: group -> name -> (lazy import target, one-line description).

Nothing here is imported until a component is built, so listing stays cheap and works from a
source checkout without reinstalling. Plugins add entries through the `daefr.<group>` entry points.
"""

from __future__ import annotations

BUILTINS: dict[str, dict[str, tuple[str, str]]] = {
    "encoders": {},
    "decoders": {},
    "codebooks": {},
    "associations": {},
    "fusions": {},
    "predictors": {
        "transformer": ("daefr.nn.transformer:CodeTransformer",
                        "9-layer pre-LN code-prediction transformer (official layout)"),
    },
    "discriminators": {},
    "degradations": {},
    "datasets": {},
    "losses": {
        "lpips": ("daefr.losses.lpips:LPIPS", "LPIPS perceptual distance (VGG16 + linear heads, weights from files)"),
    },
    "face_detectors": {},
    "upsamplers": {},
}
