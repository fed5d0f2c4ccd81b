import pytest
import torch

from nolabel.ops.queue import FeatureQueue


def rows(start, count, dim=2):
    """Row r holds the value r in every coordinate, so order is easy to read."""
    return torch.arange(start, start + count, dtype=torch.float32)[:, None].repeat(1, dim)


def test_empty_queue():
    q = FeatureQueue(5, 3)
    assert len(q) == 0 and not q.is_full and bool(q)
    assert q.features().shape == (0, 3)


def test_fills_in_push_order_then_wraps_oldest_first():
    q = FeatureQueue(5, 2)
    q.push(rows(0, 3))
    assert len(q) == 3 and not q.is_full
    assert torch.equal(q.features(), rows(0, 3))
    q.push(rows(3, 3))                                               # 6 rows into 5: row 0 dropped
    assert len(q) == 5 and q.is_full
    assert torch.equal(q.features(), rows(1, 5))
    q.push(rows(6, 4))
    assert torch.equal(q.features(), rows(5, 5))


def test_push_larger_than_queue_keeps_newest():
    q = FeatureQueue(4, 2)
    q.push(rows(0, 1))
    q.push(rows(1, 10))
    assert torch.equal(q.features(), rows(7, 4))
    q.push(rows(11, 1))
    assert torch.equal(q.features(), rows(8, 4))


def test_matches_a_naive_list_over_random_pushes():
    g = torch.Generator().manual_seed(0)
    size, seen, q = 7, [], FeatureQueue(7, 2)
    start = 0
    for _ in range(30):
        count = int(torch.randint(0, 10, (1,), generator=g))
        q.push(rows(start, count))
        seen.extend(range(start, start + count))
        start += count
        kept = seen[-size:]
        assert len(q) == len(kept) and q.is_full == (len(kept) == size)
        assert q.features()[:, 0].tolist() == [float(v) for v in kept]


def test_push_detaches_and_stores_float32():
    q = FeatureQueue(4, 3)
    x = torch.randn(2, 3, requires_grad=True)
    q.push(x.half())
    assert q.features().dtype == torch.float32 and not q.features().requires_grad
    assert torch.allclose(q.features(), x.detach(), atol=1e-2)


def test_state_dict_round_trip():
    q = FeatureQueue(5, 2)
    q.push(rows(0, 7))
    state = q.state_dict()
    assert set(state) == {"queue", "ptr", "filled"}
    restored = FeatureQueue(5, 2)
    restored.load_state_dict(state)
    assert torch.equal(restored.features(), q.features()) and restored.is_full
    restored.push(rows(7, 1))
    assert torch.equal(restored.features(), rows(3, 5))


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        FeatureQueue(0, 3)
    q = FeatureQueue(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        q.push(torch.zeros(2, 4))
    with pytest.raises(ValueError):
        q.push(torch.zeros(3))
