"""GRU4Rec network: init, input modes, step semantics."""

import math

import pytest
import torch
from torch.nn import functional as F

from sessrec.models.gru import GRUStack, OneHotGRULayer, dropout
from sessrec.models.gru4rec import GRU4Rec


def test_init_bounds_follow_reference():
    torch.manual_seed(0)
    net = GRU4Rec(n_items=500, layers=[20])
    bound_wy = math.sqrt(6 / (500 + 20))
    assert net.item_weight.abs().max() <= bound_wy
    assert net.item_weight.abs().max() > 0.9 * bound_wy  # really uniform over the full range
    assert torch.all(net.item_bias == 0)
    cell = net.gru.cells[0]
    bound_gate = math.sqrt(6 / (20 + 20))  # per (H, n_in) gate block, n_in = H in shared mode
    assert cell.weight_ih.abs().max() <= bound_gate
    assert torch.all(cell.bias_ih == 0) and torch.all(cell.bias_hh == 0)


def test_shared_mode_uses_output_weights_as_input():
    torch.manual_seed(0)
    net = GRU4Rec(n_items=10, layers=[4]).eval()
    inputs = torch.tensor([1, 2])
    hidden = net.init_hidden(2)
    scores, new_hidden = net(inputs, hidden)  # (2, 10)
    expected_h = net.gru.cells[0](net.item_weight[inputs], hidden[0])
    assert torch.allclose(new_hidden[0], expected_h)
    expected = expected_h @ net.item_weight.T + net.item_bias
    assert torch.allclose(scores, expected, atol=1e-6)


def test_sampled_columns_equal_full_scores():
    torch.manual_seed(0)
    for mode, kw in [("shared", {}), ("embedding", {"embedding_size": 6}), ("onehot", {})]:
        net = GRU4Rec(n_items=30, layers=[8, 5], input_mode=mode, **kw).eval()
        inputs, cols = torch.tensor([3, 7, 7]), torch.tensor([0, 5, 29, 5])
        hidden = [torch.randn(3, 8), torch.randn(3, 5)]
        full, h_full = net(inputs, hidden)
        part, h_part = net(inputs, hidden, cols)
        assert part.shape == (3, 4)
        assert torch.allclose(part, full[:, cols], atol=1e-6), mode
        assert all(torch.allclose(a, b) for a, b in zip(h_full, h_part))


def test_onehot_layer_equals_gru_on_onehot_input():
    torch.manual_seed(0)
    layer = OneHotGRULayer(n_items=7, hidden=3, sparse=False)
    items, h = torch.tensor([0, 6]), torch.randn(2, 3)
    x = F.one_hot(items, 7).float()  # (2, 7)
    vx = x @ layer.weight_x + layer.bias
    vh = h @ layer.weight_h
    r = torch.sigmoid(vx[:, 3:6] + vh[:, 3:6])
    z = torch.sigmoid(vx[:, 6:] + vh[:, 6:])
    cand = torch.tanh(r * vh[:, :3] + vx[:, :3])
    assert torch.allclose(layer(items, h), (1 - z) * h + z * cand, atol=1e-6)


def test_sparse_gradients_touch_only_used_rows():
    net = GRU4Rec(n_items=50, layers=[4])
    scores, _ = net(torch.tensor([1, 2]), net.init_hidden(2), torch.tensor([3, 4, 10]))
    scores.sum().backward()  # noqa
    grad = net.item_table.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == {1, 2, 3, 4, 10}


def test_dropout_output_is_carried_state():
    torch.manual_seed(0)
    stack = GRUStack(4, [6], dropout_hidden=0.5).train()
    out, hidden = stack(torch.randn(8, 4), stack.init_hidden(8))
    assert out is hidden[0]
    assert (out == 0).any()  # dropped units are zero in the carried state


def test_dropout_keeps_with_probability_1_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.rand(200, 500) + 0.5  # no zeros of its own
    out = dropout(x, 0.4, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.6) < 0.008  # 100,000 draws: 5 standard deviations
    assert torch.allclose(out[kept], x[kept] / 0.6)
    assert dropout(x, 0.4, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("kwargs", [
    {"input_mode": "embedding"},
    {"input_mode": "shared", "embedding_size": 8},
    {"dropout_embed": 1.0},
    {"layers": []},
])
def test_invalid_options_rejected(kwargs):
    with pytest.raises(ValueError):
        GRU4Rec(n_items=10, **kwargs)


@pytest.mark.parametrize("mode,kw", [("shared", {}), ("embedding", {"embedding_size": 5}), ("onehot", {})])
def test_query_and_ranking_table_factor_the_full_scores(mode: str, kw: dict) -> None:
    torch.manual_seed(0)
    net = GRU4Rec(n_items=30, layers=[7, 6], input_mode=mode, **kw).eval()
    with torch.no_grad():
        net.item_table[:, -1].uniform_(-1, 1)  # non-zero output bias
    inputs = torch.tensor([1, 4, 29])
    hidden = [torch.randn(3, h) for h in net.hidden_sizes]
    scores, new_hidden = net(inputs, hidden)  # (3, 30)
    query, q_hidden = net.query(inputs, hidden)  # (3, 6)
    table = net.ranking_table()  # (30, 7)
    torch.testing.assert_close(query @ table[:, :-1].t() + table[:, -1], scores)
    assert all(torch.equal(a, b) for a, b in zip(new_hidden, q_hidden))
