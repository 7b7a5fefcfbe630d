"""The hand-written p-RNN step under 2-process CPU DDP (gloo), as a torchrun subprocess (~20 s): every
rank ends with the same weights, equal (up to float rounding) to the same DDP fit through autograd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sessrec import kernels
from sessrec.cli import main as cli_main

SCRIPT = Path(__file__).resolve().parents[1] / "ddp_scripts" / "prnn_step_ddp.py"

pytestmark = [pytest.mark.ddp, pytest.mark.skipif(not kernels.enabled(), reason="the hand-written step needs numba")]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prnn-ddp")
    for args in (["generate", "--out", str(root / "raw"), "--n-items", "60", "--n-sessions", "301"],
                 ["prepare", str(root / "raw" / "events.tsv"), "--out", str(root / "prepared")]):
        with pytest.raises(SystemExit) as info:
            cli_main(args)
        assert info.value.code == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", str(SCRIPT), "--data", str(root / "prepared"), "--out", str(root)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
