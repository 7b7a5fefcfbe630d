"""ParallelRNN (p-RNN, Hidasi et al. RecSys 2016): one GRU subnet per item feature, fused into item scores.

Each subnet k is an encoder (`sessrec.encoders.FeatureEncoder`: item ids -> (B, D_k)) feeding its own
`GRUStack`. Subnets are named by the keys of `encoders` and kept in `self.subnets` (an `nn.ModuleDict`);
each subnet module owns ALL its parameters (encoder, GRU and, with weighted fusion, its output table), so a
training schedule can freeze a subnet by name and `SessionRecModule(lr_scale=...)` can give it its own
learning rate (`sessrec.training.optim.lr_scale_groups`). Parameters shared by the subnets (concat's output table,
learned scales) live in `self.shared` and are listed by `shared_parameters()`.

Fusion of the last-layer hidden states h_k (B, H_k):
- "concat": scores = [s_1 h_1 | ... | s_K h_K | 1] @ [W | b]^T, one item table of width sum(H_k) + 1;
- "weighted": scores = sum_k s_k ([h_k | 1] @ [W_k | b_k]^T), one item table per subnet.
The scales s_k are fixed (`subnet_scale`, default 1) or learned (`learn_scale`, initialised there).

Shared input embedding (GRU4Rec's "constrained embedding"): a subnet whose encoder is
`ItemIdEncoder(shared_with_output=True)` has no embedding table of its own; its input for item i is its
own columns of the output item table, W_k[i] (concat: the columns that multiply s_k h_k; weighted: W_k;
never the bias). So `dim` must equal the subnet's last layer size H_k in either fusion, and an ID-only
p-RNN with it is GRU4Rec with input_mode="shared" (same seed: same weights, dropout masks and scores).
Its own columns, not concat's whole row, so its input does not depend on the other subnets. The input
rows and the scored rows are read in one lookup (`gather_row_sets`): one row-sparse gradient over their
union, summing both uses, as in `GRU4Rec`. A training schedule freezes what the subnet owns: with
weighted fusion its table (input and output fixed together); with concat fusion only its GRU, as the
table is shared and trains per `train_shared` (`sessrec.training.schedules` warns).

The paper's other architectures are configurations, not classes: ID-only = one subnet with an `id`
encoder; feature-only = one subnet with a feature encoder; "concat input" (one GRU fed [ID; features]) =
one subnet with a `sessrec.encoders.ConcatEncoder`.

Deliberate differences from the paper: the ID subnet's input is a learned embedding (an `id` encoder,
its own table or the output table's rows) rather than a one-hot vector, and the item tables are read with `gather_rows` (row-sparse gradients,
one lookup of the scored columns per table) as in `GRU4Rec`.

Encoders read their feature files at `bind(catalogue)`, which creates every parameter: pass `catalogue`
to the constructor, or call `bind` before the optimiser is built (`SessionRecModule.configure_model`
does it from the data module, before checkpoint weights are loaded).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sessrec.encoders.base import FeatureEncoder
from sessrec.encoders.item_id import ItemIdEncoder
from sessrec.errors import ConfigError
from sessrec.features.catalogue import Catalogue
from sessrec.models.base import SessionNet
from sessrec.models.gru import GRUStack, dropout, uniform_init_
from sessrec.models.rows import gather_row_sets, gather_rows, mark_row_sparse
from sessrec.models.rows import score_rows as score_table_rows

Fusion = Literal["concat", "weighted"]


def new_item_table(n_items: int, hidden: int, sparse: bool) -> nn.Parameter:
    """[W | b] (N, H+1): W uniform as the reference, b zero."""
    table = mark_row_sparse(nn.Parameter(torch.zeros(n_items, hidden + 1)), sparse)  # (N, H+1)
    uniform_init_(table.data[:, :-1], n_items, hidden)
    return table


def score_rows(out: Tensor, rows: Tensor) -> Tensor:
    """out (B, H), rows [W | b] (C, H+1) -> scores (B, C) (blocked on CPU without autograd)."""
    return score_table_rows(F.pad(out, (0, 1), value=1.0), rows)  # (B, C)


def reads_output_table(encoder: FeatureEncoder) -> bool:
    """Whether `encoder`'s input embedding is its subnet's columns of the output item table."""
    return isinstance(encoder, ItemIdEncoder) and encoder.shared_with_output


class Subnet(nn.Module):
    """Encoder -> input dropout -> GRUStack; with weighted fusion also its own item table [W_k | b_k].

    An encoder that `reads_output_table` is not called: the model passes its rows as `x`.
    """

    def __init__(
        self, encoder: FeatureEncoder, layers: list[int], dropout_embed: float, dropout_hidden: float
    ) -> None:
        super().__init__()
        if not layers or any(h <= 0 for h in layers):
            raise ValueError(f"layers must be a non-empty list of positive sizes, got {layers}")
        self.encoder, self.layers = encoder, list(layers)
        self.reads_table = reads_output_table(encoder)
        self.dropout_embed, self.dropout_hidden = dropout_embed, dropout_hidden
        self.gru: GRUStack | None = None
        self.item_table: nn.Parameter | None = None

    def build(self, n_items: int, own_table: bool, sparse: bool) -> None:
        """Create the GRU (and the item table, row-sparse if `sparse`) once the encoder is bound."""
        self.gru = GRUStack(self.encoder.output_size, self.layers, self.dropout_hidden)
        if own_table:
            self.item_table = new_item_table(n_items, self.layers[-1], sparse)  # (N, H_k+1)

    def forward(
        self, items: Tensor, hidden: list[Tensor], x: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """items (B,), hidden [(B, H_l)], x (B, D_k) the input when given -> last output (B, H_k), hidden."""
        x = self.encoder(items) if x is None else x  # (B, D_k)
        return self.gru(dropout(x, self.dropout_embed, self.training), hidden)


class ParallelRNN(SessionNet):
    """p-RNN with named subnets; same interface as `GRU4Rec` (see the module docstring).

    Args:
        n_items: catalogue size N (linked from the data module).
        encoders: subnet name -> encoder, e.g. ``{"id": ItemIdEncoder(100), "image": DenseEncoder(...)}``.
        layers: GRU layer sizes, one list for every subnet or a dict subnet name -> list.
        fusion: "concat" (one output table over the concatenated hidden states) or "weighted" (one
            table per subnet, scores summed with the subnet scales).
        subnet_scale: subnet name -> scale s_k (default 1 for every subnet).
        learn_scale: learn the scales (initialised at `subnet_scale`).
        dropout_embed: dropout on each encoder's output; dropout_hidden: after each GRU layer.
        sparse_grad: row-sparse gradients for the item tables (False for Adam/AdamW; encoders have
            their own `sparse_grad`, except `ItemIdEncoder(shared_with_output=True)`, which reads an
            item table).
        catalogue: bind the encoders now; None leaves it to `bind` (see the module docstring).
    """

    def __init__(
        self,
        n_items: int,
        encoders: dict[str, FeatureEncoder],
        layers: list[int] | dict[str, list[int]] = [100],  # noqa: B006 - jsonargparse needs a literal
        fusion: Fusion = "concat",
        subnet_scale: dict[str, float] | None = None,
        learn_scale: bool = False,
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
        sparse_grad: bool = True,
        catalogue: Catalogue | None = None,
    ) -> None:
        super().__init__()
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if not encoders:
            raise ValueError("encoders: give at least one subnet (name -> FeatureEncoder)")
        names = list(encoders)
        self._check_names("layers", layers, names)
        self._check_names("subnet_scale", subnet_scale, names)
        if fusion not in ("concat", "weighted"):
            raise ValueError(f"fusion must be 'concat' or 'weighted', got {fusion!r}")
        if not 0.0 <= dropout_embed < 1.0:
            raise ValueError(f"dropout_embed must be in [0, 1), got {dropout_embed}")
        self.n_items, self.fusion, self.sparse_table = n_items, fusion, sparse_grad
        self.sparse = sparse_grad or any(
            getattr(e, "sparse_grad", False) for e in encoders.values() if not reads_output_table(e)
        )
        self.subnets = nn.ModuleDict(
            {k: Subnet(enc, layers[k] if isinstance(layers, dict) else layers, dropout_embed, dropout_hidden)
             for k, enc in encoders.items()}
        )
        self._check_shared_embeddings()
        self._reads: list[list[tuple[str, slice]]] = []  # per output table: (subnet, its input columns)
        self.shared = nn.Module()
        scale = torch.tensor([float((subnet_scale or {}).get(k, 1.0)) for k in names])  # (K,)
        if learn_scale:
            self.shared.scale = nn.Parameter(scale)
        else:
            self.shared.register_buffer("scale", scale)
        self._bound = False
        if catalogue is not None:
            self.bind(catalogue)

    @staticmethod
    def _check_names(option: str, value: object, names: list[str]) -> None:
        if isinstance(value, dict) and set(value) - set(names):
            unknown = ", ".join(sorted(set(value) - set(names)))
            raise ValueError(f"{option}: unknown subnet(s) {unknown} (subnets: {', '.join(names)})")
        if option == "layers" and isinstance(value, dict) and set(value) != set(names):
            raise ValueError(f"layers: give sizes for every subnet ({', '.join(names)}) or one list for all")

    def _check_shared_embeddings(self) -> None:
        shared = "ItemIdEncoder(shared_with_output=True)"
        for name, subnet in self.subnets.items():
            enc = subnet.encoder
            if any(reads_output_table(m) for m in enc.modules() if m is not enc):
                raise ConfigError(f"encoders.{name}: {shared} must be a subnet's own encoder, "
                                  f"not a part of {type(enc).__name__}")
            if subnet.reads_table and enc.dim != subnet.layers[-1]:
                raise ConfigError(f"encoders.{name}: {shared} reads its subnet's columns of the output item "
                                  f"table, so dim ({enc.dim}) must equal the subnet's last layer size "
                                  f"({subnet.layers[-1]})")

    # ---- binding ----------------------------------------------------------------------------
    @property
    def is_bound(self) -> bool:
        return self._bound

    def bind(self, catalogue: Catalogue) -> None:
        """Bind every encoder to `catalogue` and create the GRUs and item tables (once)."""
        if self._bound:
            raise RuntimeError("ParallelRNN: bind() was already called")
        if catalogue.n_items != self.n_items:
            raise ValueError(f"catalogue has {catalogue.n_items} items but n_items is {self.n_items}")
        weighted = self.fusion == "weighted"
        for subnet in self.subnets.values():
            if not subnet.encoder.is_bound:
                subnet.encoder.bind(catalogue)
            subnet.build(self.n_items, own_table=weighted, sparse=self.sparse_table)
        if not weighted:
            width = sum(self.subnet_sizes)
            self.shared.item_table = new_item_table(self.n_items, width, self.sparse_table)  # (N, width+1)
        self._reads = self._table_reads()
        self._bound = True

    def _table_reads(self) -> list[list[tuple[str, slice]]]:
        """Per output table: the subnets reading their input from it, with their columns of it."""
        reads, start = [], 0
        for name, subnet in self.subnets.items():
            h = subnet.layers[-1]
            part = slice(start, start + h) if self.fusion == "concat" else slice(0, h)
            reads.append([(name, part)] if subnet.reads_table else [])
            start += h
        return [[r for rs in reads for r in rs]] if self.fusion == "concat" else reads

    # ---- parameters and state ---------------------------------------------------------------
    @property
    def subnet_sizes(self) -> list[int]:
        """Last-layer size H_k of every subnet, in subnet order."""
        return [s.layers[-1] for s in self.subnets.values()]

    @property
    def hidden_sizes(self) -> list[int]:
        """Sizes of the flat hidden state: every layer of every subnet, in subnet order."""
        return [h for s in self.subnets.values() for h in s.layers]

    def named_subnets(self) -> dict[str, nn.Module]:
        return dict(self.subnets)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters owned by no subnet (concat's output table, learned scales)."""
        return list(self.shared.parameters())

    @property
    def table_reads(self) -> list[list[tuple[str, slice]]]:
        """Per output table (`output_tables`): the subnets whose input is that table's rows, with their
        columns of it (`ItemIdEncoder(shared_with_output=True)`)."""
        return self._reads

    @property
    def shared_table_readers(self) -> list[str]:
        """Subnets whose input embedding is a shared parameter: concat fusion's output table."""
        return [name for name, _ in self._reads[0]] if self.fusion == "concat" and self._reads else []

    def split_hidden(self, hidden: list[Tensor]) -> dict[str, list[Tensor]]:
        """The flat hidden state as subnet name -> its layers."""
        out, i = {}, 0
        for name, subnet in self.subnets.items():
            out[name], i = hidden[i : i + len(subnet.layers)], i + len(subnet.layers)
        return out

    # ---- forward ----------------------------------------------------------------------------
    def output_tables(self) -> list[Tensor]:
        """The output item tables: concat's one, or one per subnet (weighted)."""
        if self.fusion == "concat":
            return [self.shared.item_table]
        return [s.item_table for s in self.subnets.values()]

    def _read_tables(self, inputs: Tensor, cols: Tensor | None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The scored rows of every output table, (C, H+1) or the whole table (N, H+1), and the inputs
        (B, H_k) of the subnets that read a table (with `cols`, one lookup for both, as `GRU4Rec`)."""
        out_rows, x = [], {}
        for table, reads in zip(self.output_tables(), self._reads):
            if not reads:
                out_rows.append(table if cols is None else gather_rows(table, cols, self.sparse_table))
                continue
            if cols is None:  # (rows beyond N: inputs only, `extend_inputs`)
                in_rows, rows = gather_rows(table, inputs, self.sparse_table), table[: self.n_items]  # (B|N, H+1)
            else:
                in_rows, rows = gather_row_sets(table, (inputs, cols), self.sparse_table)  # (B|C, H+1)
            out_rows.append(rows)
            x.update((name, in_rows[:, part]) for name, part in reads)  # (B, H_k) each
        return out_rows, x

    def forward(
        self, inputs: Tensor, hidden: list[Tensor], cols: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """One session-parallel step.

        inputs (B,) item ids, hidden (flat over subnets, see `hidden_sizes`), cols (C,) item ids to score
        (None: all N items). Returns scores (B, C) or (B, N) and the new hidden state.
        """
        if not self._bound:
            raise RuntimeError("ParallelRNN: call bind(catalogue) (or pass catalogue=) before forward")
        rows, x = self._read_tables(inputs, cols)  # [(C, H+1)], {name: (B, H_k)}
        outs, new_hidden = self._outputs(inputs, hidden, x)  # [(B, H_k)]
        if self.fusion == "concat":
            scores = score_rows(self._concat(outs), rows[0])  # (B, C)
        else:
            scale = self.shared.scale  # (K,)
            scores = sum(scale[k] * score_rows(o, r) for k, (o, r) in enumerate(zip(outs, rows)))  # (B, C)
        return scores, new_hidden

    def _outputs(
        self, inputs: Tensor, hidden: list[Tensor], x: dict[str, Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Every subnet's step (x: inputs of the subnets reading a table): outputs [(B, H_k)], new hidden."""
        outs, new_hidden = [], []
        for (name, subnet), h in zip(self.subnets.items(), self.split_hidden(hidden).values()):
            out, h = subnet(inputs, h, x.get(name))  # (B, H_k)
            outs.append(out)
            new_hidden += h
        return outs, new_hidden

    def extend_inputs(self, catalogue: Catalogue, new_ids: np.ndarray) -> Tensor:
        """For serving (`sessrec.serving.cold`): input indices N..N+M-1 stand for `new_ids` (M,), items
        outside the catalogue, encoded from their features by every subnet's encoder (`extend`); subnets
        reading the output table get zero rows (a table's first N rows stay the scored ones). Returns
        (M,) bool: the new items some subnet has features for. NotImplementedError when an encoder
        cannot encode new items."""
        has = torch.zeros(len(new_ids), dtype=torch.bool)
        for subnet in self.subnets.values():
            if not subnet.reads_table:
                has |= subnet.encoder.extend(catalogue, new_ids).cpu()
        for owner, name, table, reads in self._table_owners():
            if reads:
                zeros = table.new_zeros(len(new_ids), table.shape[1])  # (M, H+1)
                setattr(owner, name, nn.Parameter(torch.cat([table.detach(), zeros]), requires_grad=False))
        return has

    def _table_owners(self) -> list[tuple[nn.Module, str, Tensor, list]]:
        """(module, attribute name, table, its readers) of every output table."""
        owners = [self.shared] if self.fusion == "concat" else list(self.subnets.values())
        return [(o, "item_table", t, r) for o, t, r in zip(owners, self.output_tables(), self._reads)]

    def ranking_table(self) -> Tensor | None:
        """[W | b] (N, width+1) with scores over all items = `query(...)` @ W.T + b (concat fusion), for
        `sessrec.evaluation.screening`; None with weighted fusion (a sum of per-subnet products)."""
        return self.shared.item_table if self.fusion == "concat" else None

    def query(self, inputs: Tensor, hidden: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The fused output (B, width) of concat fusion (see `ranking_table`) and the new hidden state."""
        if self.fusion != "concat":
            raise RuntimeError("ParallelRNN.query needs fusion='concat'")
        if not self._bound:
            raise RuntimeError("ParallelRNN: call bind(catalogue) (or pass catalogue=) before query")
        _, x = self._read_tables(inputs, None)  # {name: (B, H_k)}
        outs, new_hidden = self._outputs(inputs, hidden, x)  # [(B, H_k)]
        return self._concat(outs), new_hidden  # (B, width)

    def _concat(self, outs: list[Tensor]) -> Tensor:
        """Concat fusion: the scaled subnet outputs side by side, (B, sum H_k)."""
        scale = self.shared.scale  # (K,)
        return torch.cat([o * scale[k] for k, o in enumerate(outs)], dim=1)  # (B, sum H)
