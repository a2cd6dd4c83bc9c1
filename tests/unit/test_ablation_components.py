"""Components for ablations: the single-branch "fusion" (one encoder only) trains only the encoder it keeps."""

from __future__ import annotations

import pytest
import torch

from daefr.models.daefr_net import DAEFRNet
from daefr.models.restorer import DAEFRRestorer
from daefr.nn.fusion import SingleBranchFusion
from daefr.registry import REGISTRY


def test_single_branch_passes_the_chosen_latent_on() -> None:
    hq, lq = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.equal(SingleBranchFusion(8, "hq")(lq, hq), hq)
    assert torch.equal(REGISTRY.build("fusions", {"name": "single_branch", "branch": "lq"}, channels=8)(lq, hq), lq)
    with pytest.raises(ValueError, match="branch must be 'hq' or 'lq'"):
        SingleBranchFusion(8, "both")


@pytest.mark.parametrize("branch", ["hq", "lq"])
def test_single_encoder_restorer_trains_only_the_kept_encoder(branch: str) -> None:
    torch.manual_seed(0)
    net = DAEFRNet.from_config("tiny", fusion={"name": "single_branch", "branch": branch})
    lq, gt = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    out = net(lq, gt)
    out["loss"].backward()
    kept, dropped = (net.restorer.hq_encoder, net.restorer.lq_encoder) if branch == "hq" else \
        (net.restorer.lq_encoder, net.restorer.hq_encoder)
    assert all(p.grad is None for p in dropped.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in kept.parameters())
    # the restorer saved with this architecture loads back with the same behaviour
    restorer = DAEFRRestorer.from_config(net.restorer.arch)
    restorer.load_state_dict(net.restorer.state_dict())
    with torch.no_grad():
        assert torch.equal(restorer.eval()(lq), net.restorer.eval()(lq))
