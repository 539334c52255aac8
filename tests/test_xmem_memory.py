"""XMem memory units: affinity, top-k readout vs the dense formula, consolidation sizes, prototype
choice by usage, usage-based eviction, cloning."""

import math

import pytest
import torch

from videoseg_r1.segmentation.xmem.memory import (KeyValueStore, MemoryConfig, MemoryManager, similarity,
                                                  sparse_readout, topk_softmax, usage_of)

CK, CV, N, H, W = 4, 3, 2, 2, 2  # key/value widths, objects, memory frame of 2x2 elements
HW = H * W


def _frame(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(CK, H, W, generator=g), 1 + torch.rand(1, H, W, generator=g),
            torch.randn(N, CV, H, W, generator=g), torch.rand(CK, H, W, generator=g))


def _manager(**kw):
    cfg = dict(top_k=3, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=3, max_long_term_elements=9)
    return MemoryManager(MemoryConfig(**{**cfg, **kw}))


def test_similarity_is_the_anisotropic_l2():
    g = torch.Generator().manual_seed(0)
    mk, ms = torch.randn(CK, 7, generator=g), 1 + torch.rand(1, 7, generator=g)
    qk, qe = torch.randn(CK, 5, generator=g), torch.rand(CK, 5, generator=g)
    naive = -(qe[:, None, :] * (mk[:, :, None] - qk[:, None, :]) ** 2).sum(0) * ms.T / math.sqrt(CK)
    torch.testing.assert_close(similarity(mk, ms, qk, qe), naive, rtol=1e-5, atol=1e-5)


def test_topk_readout_and_usage_equal_the_dense_official_formula():
    g = torch.Generator().manual_seed(1)
    L, Q, D, k = 20, 6, 5, 4
    sim_qt = torch.randn(Q, L, generator=g)
    values = torch.randn(L, D, generator=g)
    idx, w = topk_softmax(sim_qt, k)
    # dense: zero outside the top-k, softmax inside, affinity (L, Q)
    top = torch.topk(sim_qt.T, k, dim=0)
    dense = torch.zeros(L, Q).scatter_(0, top.indices, torch.softmax(top.values, 0))
    torch.testing.assert_close(sparse_readout(values, idx, w), (values.T @ dense).T)
    torch.testing.assert_close(usage_of(idx, w, L), dense.sum(1))


def test_consolidation_triggers_at_max_frames_and_keeps_min_frames():
    mm = _manager()
    for i in range(3):
        mm.add(*_frame(i))
        mm.match(_frame(100 + i)[0], _frame(100 + i)[3], N)
    assert mm.work.size == 3 * HW and mm.long.size == 0 and mm.num_consolidations == 0
    first_key = mm.work.key[:, :HW].clone()
    newest = _frame(3)
    mm.add(*newest)  # 4th frame = max_mid_term_frames -> consolidate
    assert mm.num_consolidations == 1
    assert mm.work.size == 2 * HW  # min_mid_term_frames: the first frame and the newest one stay
    torch.testing.assert_close(mm.work.key[:, :HW], first_key)
    torch.testing.assert_close(mm.work.key[:, HW:], newest[0].reshape(CK, -1))
    assert mm.long.size == 3 and mm.long.value.shape == (3, N * CV) and mm.long.selection is None


def test_prototypes_are_the_most_used_candidates():
    mm = _manager()
    for i in range(3):
        mm.add(*_frame(i))
    # candidates are the elements of frames 1 and 2 (indices HW .. 3HW); make three of them the most used
    favourite = [HW + 1, 2 * HW + 3, HW + 2]
    mm.work.use_count.zero_()
    mm.work.use_count[favourite] = torch.tensor([5.0, 4.0, 3.0])
    mm.work.use_count[0] = 100.0  # the first frame is never a candidate
    mm.work.life_count.fill_(1.0)
    candidates_key = mm.work.key.clone()
    mm.add(*_frame(3))
    torch.testing.assert_close(mm.long.key, candidates_key[:, favourite])
    assert bool((mm.long.shrinkage >= 1).all())  # re-read shrinkage is a convex combination of values >= 1


def test_eviction_keeps_the_limit_and_drops_the_least_used():
    mm = _manager(max_long_term_elements=7)  # room for 2 consolidations of 3 prototypes before eviction
    limit = 7 - 3
    evictions = 0
    for i in range(30):
        before = mm.num_consolidations
        survivors = None
        if mm.long.size >= limit:
            mm.long.use_count.copy_(torch.arange(mm.long.size, dtype=torch.float32))  # older = less used
            mm.long.life_count.fill_(1.0)
            survivors = mm.long.key[:, -limit:].clone()
        mm.add(*_frame(i))
        if survivors is not None and mm.num_consolidations > before:  # evicted, then consolidated
            torch.testing.assert_close(mm.long.key[:, :limit], survivors)
            evictions += 1
        mm.match(_frame(200 + i)[0], _frame(200 + i)[3], N)
        assert mm.long.size <= 7
        assert mm.work.size <= 4 * HW
    assert evictions >= 3


def test_store_remove_obsolete_keeps_order_and_count():
    s = KeyValueStore()
    s.add(torch.arange(6.0).repeat(2, 1), torch.ones(1, 6), torch.arange(6.0)[:, None])
    s.use_count.copy_(torch.tensor([5.0, 0.0, 3.0, 1.0, 4.0, 2.0]))
    s.life_count.fill_(1.0)
    s.remove_obsolete(3)
    assert s.key[0].tolist() == [0.0, 2.0, 4.0]
    assert s.value[:, 0].tolist() == [0.0, 2.0, 4.0]


def test_match_reads_working_and_long_term_memory_and_clone_is_independent():
    mm = _manager()
    for i in range(5):
        mm.add(*_frame(i))
    assert mm.long.size > 0
    key, _, _, sel = _frame(50)
    twin = mm.clone()
    out = mm.match(key, sel, N)
    assert out.shape == (N, CV, H, W)
    assert float(mm.long.life_count.min()) >= 1 and float(mm.work.use_count.sum()) > 0
    assert float(twin.work.use_count.sum()) == 0  # the clone did not see the readout
    torch.testing.assert_close(twin.match(key, sel, N), out)


def test_empty_memory_and_bad_config_are_errors():
    with pytest.raises(RuntimeError, match="memory is empty"):
        _manager().match(*_frame(0)[:1], _frame(0)[3], N)
    with pytest.raises(ValueError):
        MemoryConfig(min_mid_term_frames=5, max_mid_term_frames=5)
