"""Tiny DAEFR models for tests: the ``daefr_tiny`` parity fixture and random official-layout checkpoints.

* :func:`tiny_official_weights` -- the fixture's recipe weights (official key names), cached;
* :func:`tiny_reference` -- the fixture's stored tensors (``daefr_tiny_io.safetensors``);
* :func:`random_official_state_dict` -- random weights of any architecture in the official final-stage
  layout (877 keys for the full model), e.g. to write a tiny ``DAEFR_model.ckpt`` stand-in.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from daefr.testing.parity import fixture_meta, fixture_tensors, recipe_weights

__all__ = ["FIXTURE", "random_official_state_dict", "tiny_inputs", "tiny_official_weights", "tiny_reference"]

FIXTURE = "daefr_tiny"


@functools.lru_cache(maxsize=2)
def _weights(parity_dir: str) -> dict[str, Tensor]:
    meta = fixture_meta(parity_dir, FIXTURE)
    return recipe_weights(parity_dir, meta["state_dict"], meta["weights"]["salt"])


def tiny_official_weights(parity_dir: str | Path) -> dict[str, Tensor]:
    """Recipe weights of ``daefr_tiny`` under the official final-stage keys (a fresh dict; tensors shared)."""
    return dict(_weights(str(parity_dir)))


def tiny_reference(parity_dir: str | Path) -> dict[str, Tensor]:
    """The stored ``daefr_tiny`` tensors (``lq``, ``gt``, ``enc.*``, ``logits``, ``restored``, ...)."""
    return fixture_tensors(parity_dir, FIXTURE)


def tiny_inputs(parity_dir: str | Path) -> tuple[Tensor, Tensor]:
    """``(lq, gt)`` regenerated from the fixture's seed as the README describes."""
    meta = fixture_meta(parity_dir, FIXTURE)
    shape = tuple(meta["tensors"]["lq"]["shape"])
    g = torch.Generator().manual_seed(int(meta["inputs"]["seed"]))
    lq = torch.rand(shape, generator=g) * 2 - 1
    gt = torch.rand(shape, generator=g) * 2 - 1
    return lq, gt


def random_official_state_dict(arch: str | dict[str, Any] = "tiny", seed: int = 0) -> dict[str, Tensor]:
    """Random weights (our default init, seeded) of a :class:`DAEFRNet` in the official final-stage layout."""
    from daefr.interop.keymap_daefr import to_official_state_dict
    from daefr.models.daefr_net import DAEFRNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DAEFRNet.from_config(arch)
        # position_emb starts at zero; give it values so position handling is exercised
        for name, param in net.named_parameters():
            if name.endswith("position_emb"):
                torch.nn.init.normal_(param, std=0.02)
    return to_official_state_dict(net)
