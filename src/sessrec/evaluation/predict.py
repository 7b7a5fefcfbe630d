"""Top-k recommendations for every session of a split, after all of the session's events.

The session-parallel iterator feeds item t and targets item t+1, so a session's last event is never an
input. For prediction, `sessrec.data.batching.with_sentinels` appends one sentinel event after each session whose value is
`-(session_index + 1)`: the step whose target is negative is the step fed the session's LAST event, and
the sentinel says which session it was. Hidden state, resets and slot reuse work unchanged, so the
scores are exactly the ones evaluation computes at that position. A session of one event also gets
recommendations (one step, after that event); an empty session gets none.

`PredictMixin` gives a module with `score_step(inputs (B,), reset (B,)) -> scores (B, N)` (both
`SessionRecModule` and `BaselineModule`) a `predict_step`; `TopKWriter` writes what it returns:

    python -m sessrec predict --config configs/gru4rec/synthetic.yaml --config configs/predict.yaml \\
        --ckpt_path runs/gru4rec-synthetic/checkpoints/last.ckpt --trainer.callbacks.output recs.csv

or, without the overlay, `--trainer.callbacks+=sessrec.evaluation.predict.TopKWriter --trainer.callbacks.output
recs.csv` (the value after `callbacks.` goes to the last callback in the list). The split is the data
module's `predict_split` (default "test"); with `eval_top_n` only those candidates are recommended.

Output columns: `session` (the session's index 0..S-1 in the split, i.e. the `session` column of the
prepared `<split>.parquet`), `session_key` (the input log's session id, from `<split>.sessions.parquet`;
where `prepare` cut sessions itself, from a user column or at long gaps, the number it gave them; absent
for a folder prepared by an older version), `rank` (1..k), `item_id` (original item id, from
items.parquet) and `score`, sorted by session then rank; min(k, N) rows a session. Items the session
already contains are kept (the reference keeps them too) unless `TopKWriter(exclude_seen=True)`: then
they are left out and a session has fewer rows when fewer than k items are left.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from sessrec.data.batching import Block
from sessrec.data.prepared import Split
from sessrec.errors import ConfigError, DataError
from sessrec.evaluation.loop import block_scores
from sessrec.io import atomic_write, check_output

FORMATS = (".csv", ".parquet")
Prediction = tuple[Tensor, Tensor, Tensor]  # session (M,), item index (M, k), score (M, k)


class PredictMixin:
    """`predict_step` for a LightningModule that has `score_step(inputs, reset) -> (B, N)` scores.

    `predict_k` (default 20; `TopKWriter` sets it) is the list length. A `candidates` buffer with
    items in it (`eval_top_n`) restricts the recommendations to those items. `predict_seen` (the
    predicted split; `TopKWriter(exclude_seen=True)` sets it): items of the session get score -inf.
    """

    predict_k: int = 20
    predict_seen: Split | None = None

    @torch.no_grad()
    def predict_step(self, block: Block, batch_idx: int) -> Prediction:
        """Step through the block; after each session's last event, its top k (on the CPU)."""
        ends = (block.targets < 0).nonzero().cpu()  # (M, 2) (step, slot) fed a session's last event
        end_steps = set(ends[:, 0].tolist())
        sessions, items, scores = [], [], []
        cands = getattr(self, "candidates", None)
        cands = cands if cands is not None and cands.numel() else None
        for t, step_scores in block_scores(self.score_step, block):  # (B, N); every step: state carries over
            if t not in end_steps:
                continue
            slots = ends[ends[:, 0] == t, 1].to(block.targets.device)  # (m,)
            rows = step_scores[slots]  # (m, N)
            if self.predict_seen is not None:
                rows = _mask_seen(rows, -block.targets[t, slots] - 1, self.predict_seen)  # (m, N)
            if cands is not None:
                rows = rows[:, cands]  # (m, C)
            k = min(self.predict_k, rows.shape[1])
            top_scores, top_idx = torch.topk(rows, k, dim=1)  # (m, k)
            if cands is not None:
                top_idx = cands[top_idx]  # (m, k)
            sessions.append(-block.targets[t, slots] - 1)  # (m,)
            items.append(top_idx)
            scores.append(top_scores.float())
        if not sessions:
            k = self.predict_k
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
        return torch.cat(sessions).cpu(), torch.cat(items).cpu(), torch.cat(scores).cpu()


def _mask_seen(rows: Tensor, sessions: Tensor, split: Split) -> Tensor:
    """rows (m, N) with -inf at the items of each session (m,) of `split` (one gather, one upload)."""
    s = sessions.cpu().numpy()  # (m,)
    starts = split.offsets[s]  # (m,)
    lengths = split.offsets[s + 1] - starts  # (m,)
    row = np.repeat(np.arange(len(s)), lengths)  # (E,) the row of each seen event
    pos = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    index = torch.as_tensor(np.stack([row, split.items[pos]]), dtype=torch.long, device=rows.device)  # (2, E)
    rows = rows.clone()
    rows[index[0], index[1]] = -torch.inf
    return rows


class TopKWriter(BasePredictionWriter):
    """Writes each predicted session's top-k list to `output` (.csv or .parquet), atomically.

    Args:
        output: the file to write; its extension picks the format.
        k: recommendations per session (at most the number of candidate items).
        exclude_seen: leave out the items already in the session (a session then gets fewer than k
            rows when fewer items are left).
    """

    def __init__(self, output: str, k: int = 20, exclude_seen: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output, self.k, self.exclude_seen = Path(output), k, exclude_seen
        self._parts: list[Prediction] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Checks the options here, not in __init__: the CLI then reports them as one-line errors."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        if self.output.suffix.lower() not in FORMATS:
            formats = ", ".join(FORMATS)
            raise ConfigError(f"TopKWriter output: {self.output}: extension must be one of {formats}")
        if self.k < 1:
            raise ConfigError(f"TopKWriter k must be >= 1, got {self.k}")
        if not hasattr(pl_module, "predict_k"):
            name = type(pl_module).__name__
            raise ConfigError(f"TopKWriter: {name} has no top-k predict_step (sessrec.evaluation.predict.PredictMixin)")
        if trainer.world_size > 1:
            raise ConfigError("TopKWriter: predict on one device (--trainer.devices 1)")
        check_output(self.output, _run_inputs(trainer, pl_module), option="TopKWriter output")
        _check_writable(self.output)  # fail before predicting, not after
        pl_module.predict_k = self.k
        pl_module.predict_seen = trainer.datamodule.split("predict") if self.exclude_seen else None
        # blocks come from an IterableDataset: there are no sample indices, and none are needed here
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Prediction,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._parts.append(prediction)

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        item_ids = getattr(trainer.datamodule, "item_ids", None)
        keys = trainer.datamodule.session_keys("predict") if hasattr(trainer.datamodule, "session_keys") else None
        write_topk(self.output, self._parts, item_ids, self.exclude_seen, keys)
        self._parts = []


def topk_frame(
    parts: Sequence[Prediction], item_ids: np.ndarray | None = None, exclude_seen: bool = False,
    session_keys: np.ndarray | None = None,
) -> pd.DataFrame:
    """Columns session, [session_key,] rank, item_id, score, sorted by session then rank (item index if
    no ids); `exclude_seen`: the rows of seen items (score -inf, from `_mask_seen`) are left out;
    `session_keys` (S,): the key of each session of the split."""
    parts = [p for p in parts if p[0].numel()]  # blocks where no session ended
    k = max((p[1].shape[1] for p in parts), default=0)
    sessions = torch.cat([p[0] for p in parts]).numpy() if parts else np.zeros(0, np.int64)  # (M,)
    items = torch.cat([p[1] for p in parts]).numpy() if parts else np.zeros((0, k), np.int64)  # (M, k)
    scores = torch.cat([p[2] for p in parts]).numpy() if parts else np.zeros((0, k), np.float32)  # (M, k)
    order = np.argsort(sessions, kind="stable")  # (M,)
    sessions, items, scores = sessions[order], items[order], scores[order]
    flat_items = items.reshape(-1)  # (M*k,)
    session = np.repeat(sessions, k).astype(np.int64)  # (M*k,)
    keys = {} if session_keys is None else {"session_key": session_keys[session]}
    frame = pd.DataFrame(
        {
            "session": session,
            **keys,
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), sessions.size),
            "item_id": item_ids[flat_items] if item_ids is not None else flat_items,
            "score": scores.reshape(-1).astype(np.float32),
        }
    )
    if not exclude_seen:
        return frame
    return frame[frame["score"] != -np.inf].reset_index(drop=True)


def write_topk(
    path: str | os.PathLike,
    parts: Sequence[Prediction],
    item_ids: np.ndarray | None,
    exclude_seen: bool = False,
    session_keys: np.ndarray | None = None,
) -> None:
    """Write `topk_frame(parts, item_ids, exclude_seen, session_keys)` to `path` (.csv or .parquet) via a
    temporary file."""
    path = Path(path)
    frame = topk_frame(parts, item_ids, exclude_seen, session_keys)
    _check_writable(path)
    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        else:
            frame.to_csv(tmp, index=False)


def _run_inputs(trainer: Any, pl_module: Any) -> list[Path]:
    """What a predict run reads and its output must not replace: the prepared data folder (which holds
    items.parquet and the splits), the checkpoint and the encoders' feature files."""
    from sessrec.encoders.base import FeatureEncoder
    from sessrec.features.store import ids_path
    from sessrec.training.checkpoints import LIGHTNING_KEYWORDS

    inputs: list[Path] = []
    datamodule = trainer.datamodule
    data_dir = getattr(datamodule, "data_dir", None)
    if data_dir is not None:
        inputs.append(Path(data_dir))
    ckpt = trainer.ckpt_path
    if ckpt is not None and str(ckpt) not in LIGHTNING_KEYWORDS and "://" not in str(ckpt):
        inputs.append(Path(ckpt))
    paths = [m.path for m in pl_module.modules() if isinstance(m, FeatureEncoder) and isinstance(
        getattr(m, "path", None), (str, os.PathLike))]
    if paths and hasattr(datamodule, "catalogue"):
        catalogue = datamodule.catalogue()
        for path in paths:
            resolved = catalogue.resolve(path)
            inputs += [resolved, ids_path(resolved)]
    return inputs


def _check_writable(path: Path) -> None:
    """DataError naming `path` unless a file can be created beside it (creates missing parent folders)."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file (TopKWriter output)")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise DataError(f"{path}: cannot write recommendations there ({blocker} is not a folder)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise DataError(f"{path}: cannot write recommendations there ({err.strerror or err})") from None


@torch.no_grad()
def recommend(
    module: Any, items: Sequence[int], k: int = 10, candidates: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (item indices (k,), scores (k,)) after feeding one session's `items` (indices) in order.

    The same scores as evaluation at that position; items already in the session are not excluded.
    """
    if len(items) == 0:
        raise ValueError("recommend: the session has no items")
    module.on_test_epoch_start()
    device = module.device
    for pos, item in enumerate(items):
        inputs, reset = torch.tensor([int(item)], device=device), torch.tensor([pos == 0], device=device)
        scores = module.score_step(inputs, reset)  # (1, N)
    row = scores[0]  # (N,)
    if candidates is not None:
        candidates = candidates.to(device)
        row = row[candidates]  # (C,)
    top_scores, top = torch.topk(row, min(k, row.shape[0]))  # (k,)
    if candidates is not None:
        top = candidates[top]
    return top.cpu().numpy(), top_scores.float().cpu().numpy()
