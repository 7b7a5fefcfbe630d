"""The serving step in TorchScript: `net.query` traced and frozen once, checked against the eager model.

`traced_query(net)` returns a function with `net.query`'s contract, (inputs (B,), hidden [(B, H_l)]) ->
(query (B, D), new hidden [(B, H_l)]), running a `torch.jit.trace` of it frozen for inference, or None
when tracing fails or the traced step does not reproduce the eager one (checked at two batch sizes,
so a shape baked into the trace is caught): the caller then keeps the eager model. Measured on one CPU
thread (docs/benchmarks.md, "TorchScript serving step"): 42 -> 31 us for a GRU4Rec step of one session,
356 -> 185 us for the bundled p-RNN's.

Only nets with a ranking table (GRU4Rec, concat p-RNN: `query`) are traced; set SESSREC_TRACE=0 to serve
the eager model everywhere.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Query = Callable[[Tensor, list[Tensor]], tuple[Tensor, list[Tensor]]]
_CHECK_BATCHES = (1, 3)


class _QueryStep(nn.Module):
    """`net.query` with flat outputs, as tracing needs: (inputs, *hidden) -> (query, *new hidden)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor, *hidden: Tensor) -> tuple[Tensor, ...]:
        query, new_hidden = self.net.query(inputs, list(hidden))
        return (query, *new_hidden)


def traced_query(net: nn.Module, device: torch.device) -> Query | None:
    """A traced, frozen `net.query` equal to the eager one (see the module docstring), or None."""
    if os.environ.get("SESSREC_TRACE", "1") == "0" or net.ranking_table() is None:
        return None
    gen = torch.Generator().manual_seed(0)
    sizes = [h.shape[1] for h in net.init_hidden(1, device)]  # H_l per layer
    examples = [(torch.randint(net.n_items, (b,), generator=gen).to(device),
                 [torch.randn(b, h, generator=gen).to(device) for h in sizes]) for b in _CHECK_BATCHES]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            inputs, hidden = examples[-1]
            traced = torch.jit.trace(_QueryStep(net).eval(), (inputs, *hidden), check_trace=False)
            module = torch.jit.freeze(traced)
            for inputs, hidden in examples:
                want_query, want_hidden = net.query(inputs, hidden)
                got = module(inputs, *hidden)
                want = (want_query, *want_hidden)
                if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want)):
                    log.info("the traced serving step differs from the eager one: serving the eager model")
                    return None
    except Exception as err:  # noqa: BLE001 - any tracing failure means: keep the eager model
        log.info("the serving step could not be traced (%s): serving the eager model", str(err).splitlines()[0])
        return None

    def query(inputs: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        out = module(inputs, *hidden)
        return out[0], list(out[1:])

    return query
