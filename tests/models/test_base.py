"""SessionNet: the one interface the module, evaluation, serving and schedules use (no attribute probes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sessrec.errors import ConfigError
from sessrec.models.base import SessionNet
from sessrec.models.gru4rec import GRU4Rec
from sessrec.training.module import SessionRecModule


class TwoLayers(SessionNet):
    n_items = 5

    @property
    def hidden_sizes(self) -> list[int]:
        return [3, 2]


def test_defaults_describe_a_plain_net():
    net = TwoLayers()
    assert [tuple(h.shape) for h in net.init_hidden(4)] == [(4, 3), (4, 2)]
    assert all(not h.any() for h in net.init_hidden(4))
    assert net.ranking_table() is None and net.named_subnets() == {} and net.shared_table_readers == []
    assert net.is_bound
    with pytest.raises(NotImplementedError, match="no factored scores"):
        net.query(torch.zeros(1, dtype=torch.long), net.init_hidden(1))


def test_gru4rec_is_a_session_net_with_factored_scores():
    net = GRU4Rec(n_items=7, layers=[4])
    assert isinstance(net, SessionNet) and net.ranking_table().shape == (7, 5)


def test_the_module_refuses_a_net_without_the_interface():
    with pytest.raises(ConfigError, match="net must be a sessrec.models.base.SessionNet.*got Linear"):
        SessionRecModule(nn.Linear(2, 2))
