"""Items outside the trained catalogue as session inputs, from their features (p-RNN only).

A shop adds products after training. A p-RNN can still take a click on one as input: its feature
subnets encode the product from its rows in the feature files (with the training catalogue's statistics
and category codes: `FeatureEncoder.extend`), its ID subnet gets a zero embedding. It is never
recommended (it has no output row until the model is retrained).

`cold_items(net, spec, catalogue, known)` extends a bound ParallelRNN for every item that a feature file
of `spec` has a row for and `known` lacks, and returns new id -> input index (N, N+1, ...) for those with
features. Any other net, an encoder that cannot extend, or SESSREC_COLD=0: nothing (such ids stay
unknown: `UnknownItemError`, HTTP 404).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from sessrec.features.catalogue import Catalogue
from sessrec.features.store import file_item_ids

log = logging.getLogger(__name__)


def cold_items(net: Any, spec: dict | None, catalogue: Catalogue | None, known: np.ndarray) -> dict[str, int]:
    """Extend `net` for the feature files' items outside `known` (see the module docstring)."""
    from sessrec.models.prnn import ParallelRNN
    from sessrec.serving.artefact import feature_files

    if os.environ.get("SESSREC_COLD", "1") == "0" or spec is None or catalogue is None:
        return {}
    if not isinstance(net, ParallelRNN):
        return {}
    ids: set[str] = set()
    for path in feature_files(spec, catalogue):
        ids.update(str(i) for i in file_item_ids(path))
    new = np.array(sorted(ids - set(str(i) for i in known)), dtype=object)  # (M,)
    if not len(new):
        return {}
    try:
        has = net.extend_inputs(catalogue, new).numpy()  # (M,) bool
    except NotImplementedError as err:
        log.info("items outside the catalogue stay unknown: %s", err)
        return {}
    n = len(known)
    cold = {item_id: n + j for j, item_id in enumerate(new) if has[j]}
    log.info("%d item(s) outside the catalogue can be session inputs (from their features)", len(cold))
    return cold
