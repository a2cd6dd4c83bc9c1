"""daefr.interop: official checkpoint reading (safe), key mapping, safetensors export and loading.

Public names are imported on first use (``import daefr.interop`` stays light):

* ``read_official_checkpoint(path) -> dict[str, Tensor]`` -- safe reader (no pytorch_lightning needed);
* ``restorer_from_official(state_dict, **arch) -> DAEFRRestorer`` -- official final-stage state dict;
* ``load_restorer(path, **arch) -> DAEFRRestorer`` -- our safetensors export or an official ``.ckpt``.
"""

from __future__ import annotations

from daefr.utils.lazy import lazy_getattr

_LAZY = {
    "read_official_checkpoint": "daefr.interop.official_reader:read_official_checkpoint",
    "restorer_from_official": "daefr.interop.restorer_io:restorer_from_official",
    "load_restorer": "daefr.interop.restorer_io:load_restorer",
    "save_restorer": "daefr.interop.restorer_io:save_restorer",
    "infer_official_arch": "daefr.interop.restorer_io:infer_official_arch",
}


__getattr__ = lazy_getattr("daefr.interop", _LAZY)

__all__ = list(_LAZY)
