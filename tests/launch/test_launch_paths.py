"""The documented launch paths (docs/distributed.md), each as 2 CPU processes (gloo) on tiny data.

`--trainer.devices 2` (Lightning launches rank 1), torchrun on one node, torchrun as 2 nodes of one
process (`--trainer.num_nodes 2`), and SLURM (two `python -m sessrec fit` processes with the variables
`srun` sets; Lightning's SLURMEnvironment reads them). The net keeps its row-sparse item table
(the default): ranks must end with identical parameters.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "gru4rec" / "synthetic.yaml"
PRNN = REPO / "configs" / "prnn" / "prnn.yaml"  # id + image + text + properties subnets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, data: Path, base: Path = CONFIG) -> Path:
    cfg = yaml.safe_load(base.read_text())
    cfg["trainer"].update(max_epochs=1, accelerator="cpu", default_root_dir=str(tmp_path), enable_progress_bar=False,
                          strategy="ddp")
    cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    cfg["trainer"]["callbacks"].append({"class_path": "rank_digest.RankDigest",
                                        "init_args": {"out": str(tmp_path / "ranks")}})
    net = cfg["model"]["init_args"]["net"]["init_args"]
    net["layers"] = [16]
    for encoder in net.get("encoders", {}).values():
        if "dim" in encoder.get("init_args", {}):
            encoder["init_args"]["dim"] = 16
    cfg["model"]["init_args"].update(n_sample=64, momentum=0.3)
    cfg["data"].update(data_dir=str(data), batch_size=16)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "tests" / "ddp_scripts"), **extra)
    return env


def _check(tmp_path: Path, num_nodes: int, environment: str) -> None:
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["num_nodes"] == num_nodes and ranks[0]["environment"] == environment
    assert ranks[0]["digest"] == ranks[1]["digest"]  # identical parameters on both ranks
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["sessrec_hidden"][0].shape[0] == 2  # the hidden states of both ranks were saved


def _run(cmds: list[list[str]], envs: list[dict[str, str]]) -> None:
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
             for c, e in zip(cmds, envs)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]


FIT = [sys.executable, "-m", "sessrec", "fit", "--config"]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.ddp
def test_trainer_devices(tmp_path, tiny_prepared):
    cfg = _config(tmp_path, tiny_prepared)
    _run([FIT + [str(cfg), "--trainer.devices", "2"]], [_env()])
    _check(tmp_path, 1, "LightningEnvironment")


@pytest.mark.ddp
@pytest.mark.slow  # tests/training/test_schedules_ddp.py launches torchrun on one node too
def test_torchrun_one_node(tmp_path, tiny_prepared):
    cfg = _config(tmp_path, tiny_prepared)
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "sessrec", "fit",
           "--config", str(cfg), "--trainer.devices", "2"]
    _run([cmd], [_env()])
    _check(tmp_path, 1, "TorchElasticEnvironment")


@pytest.mark.ddp
def test_torchrun_two_nodes(tmp_path, tiny_prepared):
    cfg = _config(tmp_path, tiny_prepared)
    port = str(_free_port())
    cmds = [[TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(r), "--master_addr",
             "127.0.0.1", "--master_port", port, "-m", "sessrec", "fit", "--config", str(cfg),
             "--trainer.devices", "1", "--trainer.num_nodes", "2"] for r in range(2)]
    _run(cmds, [_env(), _env()])
    _check(tmp_path, 2, "TorchElasticEnvironment")


@pytest.mark.ddp
def test_slurm_two_tasks(tmp_path, tiny_prepared):
    """What `srun` does for scripts/slurm/train.sbatch, with 2 nodes of one task each; a p-RNN whose
    id, text and output tables all have row-sparse gradients."""
    cfg = _config(tmp_path, tiny_prepared, PRNN)
    port = str(_free_port())
    envs = [_env(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_PROCID=str(r), SLURM_LOCALID="0",
                 SLURM_NODEID=str(r), SLURM_NNODES="2", SLURM_JOB_ID="4242", SLURM_JOB_NAME="sessrec",
                 SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(2)]
    cmd = FIT + [str(cfg), "--trainer.devices", "1", "--trainer.num_nodes", "2"]
    _run([cmd, cmd], envs)
    _check(tmp_path, 2, "SLURMEnvironment")
