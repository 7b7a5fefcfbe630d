import math

import numpy as np
import pytest
import torch

from sessrec.baselines import ItemKNN, Pop, SessionPop

# 4 training sessions over 5 items (0..4); session 3 repeats item 2.
SESSIONS = [[0, 1, 2], [0, 1], [1, 3], [2, 3, 4, 2]]
ITEMS = np.array([i for s in SESSIONS for i in s], dtype=np.int64)
OFFSETS = np.cumsum([0] + [len(s) for s in SESSIONS]).astype(np.int64)
# supp (sessions containing the item): 0: 2, 1: 3, 2: 2, 3: 2, 4: 1   (session 3 counts item 2 once)
# co: (0,1)=2 (0,2)=1 (1,2)=1 (1,3)=1 (2,3)=1 (2,4)=1 (3,4)=1, all other pairs 0
# event counts (POP): 0: 2, 1: 3, 2: 3, 3: 2, 4: 1


def step(model, inputs, reset):
    return model(torch.tensor(inputs), torch.tensor(reset))


def test_knn_hand_computed_cosine() -> None:
    knn = ItemKNN(n_sims=10, lambda_=1.0, alpha=0.5)
    knn.fit(ITEMS, OFFSETS, 5)
    scores = step(knn, [0, 2], [True, True])  # (2, 5)
    # item 0: s(0,1) = 2 / sqrt((2+1)(3+1)), s(0,2) = 1 / sqrt(3*3), s(0,3) = s(0,4) = 0
    expected0 = [0.0, 2 / math.sqrt(12), 1 / 3, 0.0, 0.0]
    # item 2: s(2,0) = 1/sqrt(3*3), s(2,1) = 1/sqrt(3*4), s(2,3) = 1/sqrt(3*3), s(2,4) = 1/sqrt(3*2)
    expected2 = [1 / 3, 1 / math.sqrt(12), 0.0, 1 / 3, 1 / math.sqrt(6)]
    torch.testing.assert_close(scores, torch.tensor([expected0, expected2]))


def test_knn_asymmetric_alpha() -> None:
    knn = ItemKNN(n_sims=10, lambda_=1.0, alpha=0.75)
    knn.fit(ITEMS, OFFSETS, 5)
    scores = step(knn, [0, 1], [True, True])
    # s(i,j) = co / ((supp_i + 1)^0.75 (supp_j + 1)^0.25):
    # s(0,1) = 2 / (3^.75 4^.25), s(1,0) = 2 / (4^.75 3^.25), s(1,3) = 1 / (4^.75 3^.25)
    assert scores[0, 1].item() == pytest.approx(2 / (3**0.75 * 4**0.25), rel=1e-6)
    assert scores[1, 0].item() == pytest.approx(2 / (4**0.75 * 3**0.25), rel=1e-6)
    assert scores[1, 3].item() == pytest.approx(1 / (4**0.75 * 3**0.25), rel=1e-6)


def test_knn_truncates_to_n_sims_and_excludes_self() -> None:
    knn = ItemKNN(n_sims=3, lambda_=1.0, alpha=0.5)
    knn.fit(ITEMS, OFFSETS, 5)
    scores = step(knn, [2], [False])[0]
    # neighbours of 2 by similarity: 4 (.408), then 0 and 3 (.333), then 1 (.289): item 1 is cut
    assert scores[1].item() == 0.0 and scores[2].item() == 0.0
    assert torch.count_nonzero(scores).item() == 3
    assert knn.sim_idx[2].tolist() == [4, 0, 3]  # ties by the smaller index
    assert knn.sim_idx.shape == (5, 3) and knn.sim_val.shape == (5, 3)


def test_knn_block_sizes_do_not_change_the_result() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 8, size=300)
    items = rng.integers(0, 40, size=lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    whole, blocked = ItemKNN(n_sims=5), ItemKNN(n_sims=5, block_nnz=50)
    whole.fit(items, offsets, 45)
    blocked.fit(items, offsets, 45)
    assert torch.equal(whole.sim_idx, blocked.sim_idx) and torch.equal(whole.sim_val, blocked.sim_val)
    assert (whole.sim_val[40:] == 0).all()  # items without training events have no neighbours
    inputs = torch.arange(45)
    assert (whole(inputs, torch.zeros(45, dtype=torch.bool))[inputs, inputs] == 0).all()


def test_pop_orders_by_training_events() -> None:
    pop = Pop()
    pop.fit(ITEMS, OFFSETS, 5)
    scores = step(pop, [4, 0], [True, False])  # (2, 5), the same row for every slot
    assert scores.tolist() == [[2.0, 3.0, 3.0, 2.0, 1.0]] * 2


def test_session_pop_counts_and_resets() -> None:
    spop = SessionPop()
    spop.fit(ITEMS, OFFSETS, 5)
    spop.begin(2, "cpu")
    # pop levels: distinct counts 1, 2, 3 -> dense ranks 0, 1, 2 -> levels 0, 1/3, 2/3
    level = torch.tensor([1, 2, 2, 1, 0]) / 3
    s = step(spop, [3, 4], [True, True])
    torch.testing.assert_close(s[0], level + torch.tensor([0.0, 0, 0, 1, 0]))
    s = step(spop, [0, 3], [False, False])
    torch.testing.assert_close(s[0], level + torch.tensor([1.0, 0, 0, 1, 0]))
    s = step(spop, [3, 2], [False, True])  # slot 1 starts a new session: its counts are cleared
    torch.testing.assert_close(s[0], level + torch.tensor([1.0, 0, 0, 2, 0]))
    torch.testing.assert_close(s[1], level + torch.tensor([0.0, 0, 1, 0, 0]))
    assert s[0].argsort(descending=True)[:2].tolist() == [3, 0]  # count first, then popularity
    spop.begin(2, "cpu")  # a new evaluation pass starts empty
    torch.testing.assert_close(step(spop, [1, 1], [False, False])[0], level + torch.tensor([0.0, 1, 0, 0, 0]))


def test_session_pop_requires_begin() -> None:
    spop = SessionPop()
    spop.fit(ITEMS, OFFSETS, 5)
    with pytest.raises(RuntimeError, match="begin"):
        step(spop, [1], [True])


def test_pop_normalize_and_spop_without_popularity_ties():
    import numpy as np
    import torch

    from sessrec.baselines import Pop, SessionPop

    items = np.array([0, 1, 1, 2, 2, 2], dtype=np.int64)
    offsets = np.array([0, 2, 6], dtype=np.int64)
    pop = Pop(normalize=True)
    pop.fit(items, offsets, 4)
    assert torch.allclose(pop(torch.tensor([0]), torch.tensor([True]))[0], torch.tensor([1, 2, 3, 0]) / 6)
    spop = SessionPop(popularity_ties=False)
    spop.fit(items, offsets, 4)
    spop.begin(1)
    scores = spop(torch.tensor([1]), torch.tensor([True]))
    assert scores.tolist() == [[0.0, 1.0, 0.0, 0.0]]  # only the session count, no popularity level
