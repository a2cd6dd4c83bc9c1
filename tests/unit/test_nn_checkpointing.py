"""Activation checkpointing of the VQGAN encoder/decoder: same outputs, same gradients, less stored."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from daefr.models.vqgan import VQGAN
from daefr.nn.vqgan import Decoder, Encoder, set_activation_checkpointing

LAYOUT: dict[str, Any] = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16, "attn_resolutions": [8],
          "z_channels": 32, "enable_mid": True, "head_size": 1}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _vqgan(dropout: float = 0.0) -> VQGAN:
    torch.manual_seed(0)
    enc = {"name": "vqgan", **LAYOUT, "dropout": dropout}
    return VQGAN(enc, enc, {"name": "vq", "n_embed": 32, "embed_dim": 32})


def _loss_and_grads(model: VQGAN, x: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout draws
    recon, cb_loss, _ = model(x)
    loss = (recon - x).abs().mean() + cb_loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpointing_keeps_loss_and_gradients(dropout: float) -> None:
    model = _vqgan(dropout).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    loss_ref, grads_ref = _loss_and_grads(model, x)
    assert set_activation_checkpointing(model, True) == 2
    loss_ckpt, grads_ckpt = _loss_and_grads(model, x)
    assert torch.equal(loss_ref, loss_ckpt)
    assert grads_ref.keys() == grads_ckpt.keys() and len(grads_ref) > 20
    for name, grad in grads_ref.items():
        # recomputation repeats the same kernels on the same inputs (dropout masks replayed): same numbers
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_stores_fewer_activations() -> None:
    """Tensors saved for backward (counted with saved-tensor hooks) shrink when checkpointing is on."""
    model = _vqgan().train()
    x = torch.rand(1, 3, 16, 16) * 2 - 1

    def saved_elements() -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            recon, cb_loss, _ = model(x)
        ((recon - x).abs().mean() + cb_loss).backward()
        return total

    plain = saved_elements()
    set_activation_checkpointing(model, True)
    assert saved_elements() < 0.6 * plain


def test_checkpointing_is_off_by_default_and_skipped_without_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    enc, dec = Encoder(**LAYOUT), Decoder(**LAYOUT)
    assert not enc.checkpointing and not dec.checkpointing
    calls: list[nn.Module] = []
    import daefr.nn.vqgan as vqgan_mod

    real = vqgan_mod.checkpoint

    def spy(fn: nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(vqgan_mod, "checkpoint", spy)
    set_activation_checkpointing(enc, True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        enc(x)
    enc.eval()
    enc(x)  # eval mode: the inference graph never checkpoints
    assert calls == []
    enc.train()
    enc(x)
    # level 0: one ResnetBlock; level 1 (resolution 8): ResnetBlock + attention; mid: block, attention, block
    assert len(calls) == 2 + 1 + 3
