"""Row lookups with coalesced sparse gradients (gather_rows / gather_row_sets) and full-catalogue scoring."""

import pytest
import torch

from sessrec.models import rows as rows_mod
from sessrec.models.rows import gather_row_sets, gather_rows, score_rows


def _table(n: int = 12, d: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _weights(*shapes: tuple[int, int]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes]


def test_row_sets_equal_plain_indexing_and_plain_autograd_gradient():
    inputs, cols = torch.tensor([3, 7, 7, 0]), torch.tensor([7, 11, 3, 5, 5, 2])  # repeats within and across
    w_in, w_out = _weights((4, 3), (6, 3))
    table = _table().requires_grad_(True)
    got_in, got_out = gather_row_sets(table, (inputs, cols))
    ((got_in * w_in).sum() + (got_out * w_out).sin().sum()).backward()

    ref_table = _table().requires_grad_(True)
    ref_in, ref_out = ref_table[inputs], ref_table[cols]  # plain PyTorch: a dense gradient
    ((ref_in * w_in).sum() + (ref_out * w_out).sin().sum()).backward()

    assert torch.equal(got_in, ref_in) and torch.equal(got_out, ref_out)
    grad = table.grad
    assert grad.is_sparse
    assert grad._indices()[0].tolist() == [0, 2, 3, 5, 7, 11]  # the union's unique rows, sorted
    assert torch.allclose(grad.to_dense(), ref_table.grad, rtol=0, atol=1e-14)


def test_sparse_gradient_of_the_function_is_flagged_coalesced():
    table = _table().requires_grad_(True)
    a, b = gather_row_sets(table, (torch.tensor([4, 1]), torch.tensor([1, 9, 4])))
    (grad,) = torch.autograd.grad(a.sum() + 2 * b.sum(), table)  # the Function's own output, not accumulated
    assert grad.is_sparse and grad.is_coalesced()
    assert grad._indices()[0].tolist() == [1, 4, 9]
    assert grad._values()[:, 0].tolist() == [3.0, 3.0, 2.0]  # row 1: 1 + 2, row 4: 1 + 2, row 9: 2


def test_unused_output_gives_gradient_over_all_sets_rows():
    # only the second set reaches the loss: the gradient still lists the union (zero rows for the first set)
    table = _table().requires_grad_(True)
    _, out = gather_row_sets(table, (torch.tensor([6]), torch.tensor([2, 2])))
    out.sum().backward()
    grad = table.grad.coalesce()
    assert grad.to_dense()[2].tolist() == [2.0, 2.0, 2.0]
    assert grad.to_dense().abs().sum().item() == 6.0


def test_single_set_matches_gather_rows_and_dense_path():
    table = _table().requires_grad_(True)
    idx = torch.tensor([5, 5, 0, 8])
    (w,) = _weights((4, 3))
    (gather_rows(table, idx) * w).sum().backward()
    ref = _table().requires_grad_(True)
    (gather_rows(ref, idx, sparse=False) * w).sum().backward()  # F.embedding: dense gradient
    assert table.grad.is_sparse and not ref.grad.is_sparse
    assert torch.allclose(table.grad.to_dense(), ref.grad, rtol=0, atol=1e-14)


def test_no_grad_path_is_plain_lookup():
    table = _table().requires_grad_(True)
    with torch.no_grad():
        a, b = gather_row_sets(table, (torch.tensor([1]), torch.tensor([2, 3])))
    assert torch.equal(a, table.detach()[[1]]) and torch.equal(b, table.detach()[[2, 3]])


def test_score_rows_in_blocks_equals_one_product(monkeypatch: pytest.MonkeyPatch):
    gen = torch.Generator().manual_seed(2)
    x, table = torch.randn(5, 4, generator=gen), torch.randn(23, 4, generator=gen)
    monkeypatch.setattr(rows_mod, "_SCORE_ROWS", 2)  # 3 row blocks and 4 column blocks, the last ones partial
    monkeypatch.setattr(rows_mod, "_SCORE_COLS", 7)
    with torch.no_grad():
        blocked = score_rows(x, table)
    assert blocked.shape == (5, 23)
    assert torch.allclose(blocked, x @ table.t(), rtol=0, atol=1e-6)
    # with autograd the plain product runs (torch.mm with out= has no gradient)
    table.requires_grad_(True)
    scores = score_rows(x, table)
    scores.sum().backward()
    assert torch.allclose(table.grad, x.sum(0).expand(23, 4))
