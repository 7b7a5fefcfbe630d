"""The hand-written p-RNN step under 2-process CPU DDP (gloo), as a torchrun subprocess (~20 s): every
rank ends with the same weights, equal (up to float rounding) to the same DDP fit through autograd."""

from __future__ import annotations

import json

import pytest
import torch
from ddp_launch import tiny_data, torchrun

from sessrec import kernels

pytestmark = [pytest.mark.ddp, pytest.mark.skipif(not kernels.enabled(), reason="the hand-written step needs numba")]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prnn-ddp")
    torchrun("prnn_step_ddp.py", "--data", str(tiny_data(root, n_items=60)), "--out", str(root))
    return root


def test_handwritten_step_trains_under_ddp_as_autograd(ddp_run):
    steps = {tag: [json.loads((ddp_run / f"{tag}-rank{r}.json").read_text())["step"] for r in range(2)]
             for tag in ("autograd", "handwritten")}
    assert steps == {"autograd": ["NoneType"] * 2, "handwritten": ["HandwrittenParallelStep"] * 2}
    states = {tag: [torch.load(ddp_run / f"{tag}-rank{r}.pt", weights_only=True) for r in range(2)]
              for tag in ("autograd", "handwritten")}
    for tag, (rank0, rank1) in states.items():
        for name, value in rank0.items():
            assert torch.equal(value, rank1[name]), (tag, name)  # the ranks stay identical
    auto, hand = states["autograd"][0], states["handwritten"][0]
    assert auto.keys() == hand.keys()
    for name, value in auto.items():
        torch.testing.assert_close(hand[name], value, rtol=1e-4, atol=1e-5, msg=name)
