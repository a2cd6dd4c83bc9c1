"""Every built-in encoder, decoder, codebook and association passes the daefr.testing conformance checks."""

from __future__ import annotations

import pytest
import torch

from daefr.builtins import BUILTINS
from daefr.registry import REGISTRY
from daefr.testing.networks import check_association, check_codebook, check_decoder, check_encoder

LAYOUT = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16, attn_resolutions=(8,), z_channels=32)


@pytest.mark.parametrize("name", sorted(BUILTINS["codebooks"]))
def test_builtin_codebooks_conform(name: str) -> None:
    torch.manual_seed(0)
    check_codebook(REGISTRY.build("codebooks", {"name": name, "n_embed": 16, "embed_dim": 8}))


def test_builtin_encoders_decoders_associations_conform() -> None:
    torch.manual_seed(0)
    for name in BUILTINS["encoders"]:
        check_encoder(REGISTRY.build("encoders", {"name": name, **LAYOUT}), size=16)
    for name in BUILTINS["decoders"]:
        check_decoder(REGISTRY.build("decoders", {"name": name, **LAYOUT}), latent=4)
    for name in BUILTINS["associations"]:
        check_association(REGISTRY.build("associations", name))


def test_checks_catch_a_broken_codebook() -> None:
    vq = REGISTRY.build("codebooks", {"name": "vq", "n_embed": 16, "embed_dim": 8})
    vq.lookup = lambda idx: torch.zeros(idx.shape[0], 8, *idx.shape[1:])  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="lookup"):
        check_codebook(vq)


def test_codebook_base_lookup_reads_the_table_and_checks_the_shape() -> None:
    from daefr.nn.contracts import Codebook, QuantizerOutput

    class TableOnly(Codebook):
        """A codebook that defines only its table and forward: lookup comes from the base class."""

        def __init__(self) -> None:
            super().__init__()
            self.n_embed, self.embed_dim = 5, 3
            self.table = torch.nn.Parameter(torch.arange(15, dtype=torch.float32).view(5, 3))

        @property
        def codebook(self) -> torch.Tensor:
            return self.table

        def forward(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - not used here
            raise AssertionError("not called")

    book = TableOnly()
    indices = torch.tensor([[[0, 4], [2, 2]]])
    out = book.lookup(indices)
    assert out.shape == (1, 3, 2, 2)
    assert torch.equal(out[0, :, 0, 1], book.table[4]) and torch.equal(out[0, :, 1, 0], book.table[2])
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        book.lookup(indices[0])
