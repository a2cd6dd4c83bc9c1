"""Degradation ops through the base class: a new op in a few lines, the built-in ops alone, chains."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from daefr.data.degradation import DegradationChain, DegradationOp, daefr_small
from daefr.data.degradation.pipeline import PARAM_KEYS, STEPS
from daefr.data.degradation.steps import JPEG, Blur, ColorJitter, ColorShift, Downscale, Gray, Noise
from daefr.testing.degradations import check_degradation


class Vignette(DegradationOp):  # a new op: parameters, application; the base does the rest
    param_keys = ("strength",)

    def __init__(self, strength_range: tuple[float, float] = (0.2, 0.8)) -> None:
        super().__init__()
        self.strength_range = strength_range

    def sample_params(self, batch: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {"strength": self.uniform(self.strength_range, generator, batch).float()}

    def apply_params(self, hq: Tensor, params: dict[str, Tensor]) -> Tensor:
        h, w = hq.shape[-2:]
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        falloff = (x**2 + y**2).to(hq.device) / 2  # 0 at the centre, 1 in the corners
        return hq.float() * (1 - params["strength"].to(hq.device)[:, None, None, None] * falloff)


def test_a_new_op_through_the_base_class_honours_the_contract() -> None:
    op = Vignette()
    check_degradation(op)  # seeds, replay, 8-bit output, dtypes, layouts, input untouched
    hq = torch.rand(2, 3, 16, 16)
    out = op(hq, torch.Generator().manual_seed(0))
    assert torch.equal(op.replay(hq, out.params).lq, out.lq) and out.hq is None
    with pytest.raises(KeyError, match="strength"):
        op.replay(hq, {})


@pytest.mark.parametrize("op", [Blur(kernel_sizes=(7,), sigma_range=(1.0, 3.0)), Downscale((2.0, 4.0)),
                                Noise((5.0, 20.0), poisson_prob=0.5), JPEG((20.0, 60.0)), ColorShift(1.0),
                                Gray(0.5), ColorJitter(1.0)], ids=lambda op: type(op).__name__)
def test_each_builtin_op_works_alone(op: DegradationOp) -> None:
    check_degradation(op)


def test_pipeline_parameters_are_its_ops_parameters_in_order() -> None:
    assert PARAM_KEYS == tuple(k for step in STEPS for k in step.param_keys)
    module = daefr_small()
    params = module.sample_params(3, 64, 64, torch.Generator().manual_seed(1))
    assert tuple(params) == PARAM_KEYS
    gen = torch.Generator().manual_seed(1)
    by_op = {k: v for step in module.steps for k, v in step.sample_params(3, 64, 64, gen).items()}
    assert all(torch.equal(params[k], by_op[k]) for k in PARAM_KEYS)


def test_chain_of_the_builtin_pipeline_and_a_new_op() -> None:
    chain = DegradationChain([daefr_small(kernel_sizes=(7,), scale_range=(1.0, 2.0)), Vignette()])
    check_degradation(chain)
    hq = torch.rand(2, 3, 32, 32)
    out = chain(hq, torch.Generator().manual_seed(3))
    assert "0.jpeg_quality" in out.params and "1.strength" in out.params
    assert torch.equal(chain.replay(hq, out.params).lq, out.lq)
    plain = chain.ops[0].replay(hq, {k[2:]: v for k, v in out.params.items() if k.startswith("0.")}).lq
    assert not torch.equal(plain, out.lq)  # the vignette acted after the pipeline
