"""Online recommendations: the `Recommender` API, the export folder, the HTTP server (docs/serving.md).

- `Recommender.from_checkpoint(ckpt, config)` / `Recommender.load(export_dir)`, then
  `recommend(items, k, exclude_seen)` or `step(state, item_id)` + `top_k(state, k)`;
- `sessrec.serving.artefact`: the folder `python -m sessrec export` writes;
- `sessrec.serving.server`: `python -m sessrec serve DIR` (FastAPI + uvicorn, imported only there).
"""

from sessrec.serving.recommender import Recommender, SessionState, UnknownItemError

__all__ = ["Recommender", "SessionState", "UnknownItemError"]
