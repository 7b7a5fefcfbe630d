"""ParallelRNN with ItemIdEncoder(shared_with_output=True): the id subnet's input embedding is its columns
of the output item table (GRU4Rec's constrained embedding). One parameter, the summed row-sparse gradient,
GRU4Rec(input_mode="shared") reproduced exactly, options checked, schedules, and a config that trains."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sessrec.training.schedules import TrainingSchedule
from sessrec.data.datamodule import SessionDataModule
from sessrec.encoders import Catalogue, ConcatEncoder, DenseEncoder, ItemIdEncoder
from sessrec.errors import ConfigError
from sessrec.features import write_dense
from sessrec.models.gru4rec import GRU4Rec
from sessrec.models.prnn import ParallelRNN
from sessrec.training.module import SessionRecModule
from sessrec.training.optim import AdagradMomentum

N, B = 7, 3
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "prnn" / "id-shared.yaml"


def make_catalogue(path: Path, n: int = N) -> Catalogue:
    ids = [str(i) for i in range(n)]
    write_dense(path / "image.npy", np.random.default_rng(0).standard_normal((n, 5)).astype(np.float32), ids)
    return Catalogue(np.array(ids, dtype=object), path)


@pytest.fixture()
def catalogue(tmp_path: Path) -> Catalogue:
    return make_catalogue(tmp_path)


def two_subnets(catalogue: Catalogue, fusion: str) -> ParallelRNN:
    """image first, so the id subnet's columns of concat's table are 5:11, not 0:6."""
    torch.manual_seed(0)
    encoders = {"image": DenseEncoder("image.npy", projection=3),
                "id": ItemIdEncoder(6, shared_with_output=True)}
    return ParallelRNN(N, encoders, {"image": [2, 5], "id": [6]}, fusion=fusion, catalogue=catalogue)


def id_columns(net: ParallelRNN) -> torch.Tensor:
    """The id subnet's columns W_id (N, 6) of its output table."""
    if net.fusion == "concat":
        return net.shared.item_table[:, 5:11]
    return net.subnets["id"].item_table[:, :-1]


def manual_scores(net: ParallelRNN, inputs, hidden, table_in: torch.Tensor, table_out: torch.Tensor):
    """Scores over all items from plain torch ops; the id input is read from `table_in`, the scores from
    `table_out` (both the net's own table, or two copies to split the gradient by use)."""
    image, idn = net.subnets["image"], net.subnets["id"]
    x = image.encoder(inputs)  # (B, 3)
    x = image.gru.cells[1](image.gru.cells[0](x, hidden[0]), hidden[1])  # (B, 5)
    cols = slice(5, 11) if net.fusion == "concat" else slice(0, 6)
    y = idn.gru.cells[0](table_in[inputs, cols], hidden[2])  # (B, 6)
    if net.fusion == "concat":
        return torch.cat([x, y], 1) @ table_out[:, :-1].t() + table_out[:, -1]  # (B, N)
    w = image.item_table
    return x @ w[:, :-1].t() + w[:, -1] + y @ table_out[:, :-1].t() + table_out[:, -1]  # (B, N)


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_input_embedding_is_the_output_table(catalogue: Catalogue, fusion: str) -> None:
    net = two_subnets(catalogue, fusion).eval()
    table = net.shared.item_table if fusion == "concat" else net.subnets["id"].item_table
    assert net.subnets["id"].encoder.weight is None
    tables = [n for n, p in net.named_parameters() if p.shape[0] == N]  # the (N, .) parameters
    assert tables == (["shared.item_table"] if fusion == "concat" else
                      ["subnets.image.item_table", "subnets.id.item_table"])
    assert net.shared_table_readers == (["id"] if fusion == "concat" else [])
    with torch.no_grad():
        table.uniform_(-0.5, 0.5)
    inputs, hidden = torch.tensor([0, 3, 3]), [torch.randn(B, h) for h in net.hidden_sizes]
    scores, _ = net(inputs, hidden)  # (B, N)
    torch.testing.assert_close(scores, manual_scores(net, inputs, hidden, table, table))
    with torch.no_grad():
        id_columns(net)[3] += 1.0  # moving an item's output row moves its input embedding too
    moved, _ = net(inputs, hidden)
    assert not torch.equal(moved[1:], scores[1:]) and not torch.equal(moved[:, 3], scores[:, 3])


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_one_sparse_gradient_is_the_sum_of_both_uses(catalogue: Catalogue, fusion: str) -> None:
    net = two_subnets(catalogue, fusion)
    table = net.shared.item_table if fusion == "concat" else net.subnets["id"].item_table
    inputs, cols = torch.tensor([1, 4, 4]), torch.tensor([4, 2, 4, 6])
    hidden = [torch.randn(B, h) for h in net.hidden_sizes]
    target = torch.tensor([0, 1, 3])
    F.cross_entropy(net(inputs, hidden, cols)[0], target).backward()
    grad = table.grad
    assert grad.is_sparse  # one lookup: the union of inputs and scored rows, each row once, sorted
    assert grad._indices()[0].tolist() == [1, 2, 4, 6]  # (autograd's accumulation drops the coalesced flag)

    # autograd reference: the input lookup reads copy A, the scores read copy B; dense gradients
    a, b = (table.detach().clone().requires_grad_() for _ in range(2))
    F.cross_entropy(manual_scores(net, inputs, hidden, a, b)[:, cols], target).backward()
    assert a.grad[[0, 2, 3, 5]].abs().sum() == 0 and a.grad[[1, 4]].abs().sum() > 0  # inputs only
    torch.testing.assert_close(grad.to_dense(), a.grad + b.grad)

    # one AdagradMomentum step with the sparse gradient = the step with the summed dense one
    ref = table.detach().clone().requires_grad_()
    ref.grad = a.grad + b.grad
    before = table.detach().clone()
    for p in (table, ref):
        AdagradMomentum([p], lr=0.1, momentum=0.5).step()
    torch.testing.assert_close(table.detach(), ref.detach())
    assert torch.equal(table.detach()[[0, 3, 5]], before[[0, 3, 5]])  # untouched rows stay


def make_pair(n_items: int, hidden: int, fusion: str, cat: Catalogue, **kw) -> tuple[GRU4Rec, ParallelRNN]:
    torch.manual_seed(3)
    g4r = GRU4Rec(n_items, [hidden], input_mode="shared", **kw)
    torch.manual_seed(3)
    prnn = ParallelRNN(n_items, {"id": ItemIdEncoder(hidden, shared_with_output=True)}, [hidden],
                       fusion=fusion, catalogue=cat, **kw)
    return g4r, prnn


def _prnn_table(net: ParallelRNN) -> torch.Tensor:
    return net.shared.item_table if net.fusion == "concat" else net.subnets["id"].item_table


@pytest.mark.parametrize("fusion", ["concat", "weighted"])
def test_id_only_equals_gru4rec_shared(catalogue: Catalogue, fusion: str) -> None:
    """Same seed, same sizes: the same initial weights (tables and GRU are created in the same order),
    the same dropout masks, bitwise the same scores, loss and gradients."""
    g4r, prnn = make_pair(N, 4, fusion, catalogue, dropout_embed=0.3, dropout_hidden=0.2)
    assert torch.equal(g4r.item_table, _prnn_table(prnn))
    cell_g, cell_p = g4r.gru.cells[0], prnn.subnets["id"].gru.cells[0]
    assert all(torch.equal(a, b) for a, b in zip(cell_g.parameters(), cell_p.parameters()))
    inputs, cols, target = torch.tensor([2, 5, 2]), torch.tensor([5, 0, 2, 6]), torch.tensor([1, 0, 3])
    hidden = [torch.randn(B, 4)]
    results = []
    for net in (g4r, prnn):
        torch.manual_seed(7)  # the dropout masks
        scores, new_hidden = net(inputs, hidden, cols)  # (B, C)
        loss = F.cross_entropy(scores, target)
        loss.backward()
        results.append((scores, new_hidden[0], loss))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert torch.equal(g4r.item_table.grad.to_dense(), _prnn_table(prnn).grad.to_dense())
    assert torch.equal(cell_g.weight_ih.grad, cell_p.weight_ih.grad)
    if fusion == "concat":  # what sessrec.evaluation.screening ranks: the same query against the same table
        g4r.eval(), prnn.eval()
        assert torch.equal(g4r.query(inputs, hidden)[0], prnn.query(inputs, hidden)[0])
        assert prnn.ranking_table() is _prnn_table(prnn)


def test_id_only_trains_as_gru4rec_and_screens(tiny_prepared: Path, tmp_path: Path) -> None:
    """Trained through SessionRecModule (autograd, AdagradMomentum with momentum): the same weights and
    the same validation metrics (ranked by sessrec.evaluation.screening via query / ranking_table)."""
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, eval_batch_size=64, steps_per_block=4,
                           train_split="train_full", val_split="test")
    g4r, prnn = make_pair(dm.n_items, 8, "concat", make_catalogue(tmp_path, dm.n_items), dropout_hidden=0.1)
    metrics = []
    for net in (g4r, prnn):
        module = SessionRecModule(net, n_sample=32, lr=0.1, momentum=0.3, logq=1.0, fused_step=False)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=3, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, default_root_dir=tmp_path)
        L.seed_everything(0)
        trainer.fit(module, dm)
        metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")})
    assert torch.equal(g4r.item_table, prnn.shared.item_table)
    assert metrics[0] == metrics[1] and metrics[0]["val_mrr@20"] > 0


def test_tiny_model_overfits_tiny_data(catalogue: Catalogue) -> None:
    """Two fixed sessions 0-1-2-3 and 4-5-6: every next item predicted after some steps."""
    torch.manual_seed(0)
    net = ParallelRNN(N, {"id": ItemIdEncoder(8, shared_with_output=True)}, [8], catalogue=catalogue)
    opt = AdagradMomentum(net.parameters(), lr=0.2, momentum=0.3)
    sessions = [[0, 1, 2, 3], [4, 5, 6]]
    all_items = torch.arange(N)
    for _ in range(150):
        for s in sessions:
            hidden = net.init_hidden(1)
            for a, b in zip(s[:-1], s[1:]):
                scores, hidden = net(torch.tensor([a]), hidden, all_items)  # (1, N) through gather_row_sets
                opt.zero_grad()
                F.cross_entropy(scores, torch.tensor([b])).backward()
                opt.step()
                hidden = [h.detach() for h in hidden]
    net.eval()
    with torch.no_grad():
        for s in sessions:
            hidden = net.init_hidden(1)
            for a, b in zip(s[:-1], s[1:]):
                scores, hidden = net(torch.tensor([a]), hidden)  # (1, N)
                assert scores.argmax().item() == b and scores.softmax(1)[0, b] > 0.9


def test_invalid_options_name_the_option(catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match=r"encoders.id: .*dim \(8\) must equal .* last layer size \(6\)"):
        ParallelRNN(N, {"id": ItemIdEncoder(8, shared_with_output=True)}, [4, 6])
    with pytest.raises(ConfigError, match="encoders.both: .*subnet's own encoder"):
        ParallelRNN(N, {"both": ConcatEncoder([ItemIdEncoder(4, shared_with_output=True),
                                               DenseEncoder("image.npy")])}, [4])
    encoder = ItemIdEncoder(4, shared_with_output=True)
    encoder.bind(catalogue)
    with pytest.raises(RuntimeError, match="no table"):
        encoder(torch.tensor([0]))
    net = ParallelRNN(N, {"id": ItemIdEncoder(4, sparse_grad=True, shared_with_output=True)}, [4],
                      sparse_grad=False)
    assert not net.sparse  # the encoder's own sparse_grad is unused: the table's is the net's


# ---- training schedules -------------------------------------------------------------------------
class Snapshots(L.Callback):
    """Parameters and optimiser state just before every optimizer.step()."""

    def __init__(self) -> None:
        self.snaps: list[dict] = []

    def _snap(self, module) -> dict:
        opt = module.optimizers().optimizer
        return {n: (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
                for n, p in module.net.named_parameters()}

    def on_before_substep_step(self, trainer, module, substep) -> None:
        self.snaps.append(self._snap(module))

    def on_train_end(self, trainer, module) -> None:
        self.snaps.append(self._snap(module))


def _moved(before: dict, after: dict, prefix: str) -> bool:
    names = [n for n in before if n.startswith(prefix)]
    assert names
    return any(not torch.equal(before[n][0], after[n][0]) or before[n][1].keys() != after[n][1].keys()
               or any(not torch.equal(v, after[n][1][k]) for k, v in before[n][1].items()) for n in names)


@pytest.mark.parametrize("fusion", ["weighted", "concat"])
def test_interleaved_schedule_freezes_what_the_subnet_owns(tiny_prepared: Path, tmp_path: Path, fusion: str):
    """Weighted: the frozen id subnet's table (its input AND output) is bitwise unchanged. Concat: its GRU
    is, the shared table (its input embedding) trains, and a warning says so."""
    dm = SessionDataModule(str(tiny_prepared), batch_size=16, steps_per_block=3, train_split="train_full")
    encoders = {"id": ItemIdEncoder(8, shared_with_output=True), "other": ItemIdEncoder(8)}
    net = ParallelRNN(dm.n_items, encoders, [8], fusion=fusion)
    module = SessionRecModule(net, n_sample=32, lr=0.05, momentum=0.5)
    snaps = Snapshots()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[TrainingSchedule("interleaved"), snaps])
    L.seed_everything(0)
    if fusion == "concat":
        with pytest.warns(UserWarning, match="id read their input from the shared output item table"):
            trainer.fit(module, dm)
    else:
        trainer.fit(module, dm)
    assert len(snaps.snaps) == 7
    for s in range(6):
        before, after = snaps.snaps[s], snaps.snaps[s + 1]
        id_trains = s % 2 == 0  # order: id, other
        assert _moved(before, after, "subnets.id.") == id_trains
        assert _moved(before, after, "subnets.other.") != id_trains
        if fusion == "weighted":
            assert _moved(before, after, "subnets.id.item_table") == id_trains
        else:
            assert _moved(before, after, "shared.item_table")


def test_config_trains_and_tests(tiny_prepared: Path, tmp_path: Path, monkeypatch) -> None:
    """configs/prnn/id-shared.yaml builds, trains (row-sparse AdagradMomentum) and tests from a checkpoint
    without an encoder table in it."""
    from sessrec.cli import main

    monkeypatch.chdir(tmp_path)  # the config's run folder is relative
    common = ["--config", str(CONFIG), "--data.data_dir", str(tiny_prepared), "--trainer.max_epochs", "1",
              "--model.init_args.n_sample", "32", "--trainer.enable_progress_bar", "false",
              "--trainer.limit_test_batches", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *common, "--trainer.limit_train_batches", "3"])
    assert exit_info.value.code in (0, None)
    ckpt = tmp_path / "runs" / "prnn-synthetic-id-shared" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert "net.shared.item_table" in state and not any("encoder" in k for k in state)
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *common, "--ckpt_path", str(ckpt)])
    assert exit_info.value.code in (0, None)
