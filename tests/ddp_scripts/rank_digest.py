"""A callback for the launch tests: each rank writes its world size and a digest of its parameters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


class RankDigest(L.Callback):
    """Writes `<out>/rank<r>.json` at the end of fit: world size, node count, parameter digest."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        digest = hashlib.sha256()
        for name, value in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        self.out.mkdir(parents=True, exist_ok=True)
        info = {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "digest": digest.hexdigest(),
                "environment": type(trainer.strategy.cluster_environment).__name__}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))
