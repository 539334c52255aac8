"""The XMem speed paths compute the same function as the plain ones (CPU, float64 where possible):
per-object split of the fusion convs, BatchNorm folding, NCHW upsampling, softmax-free aggregation,
channel concatenation in a chosen memory format, precomputed query side of the affinity, the
transposed consolidation softmax, CUDA-graph wrapper semantics (static buffers, cloned outputs),
and key-batch padding in the propagator."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from videoseg_r1.config import PropagatorConfig
from videoseg_r1.segmentation.propagation import XMemPropagator
from videoseg_r1.segmentation.tiny import build_tiny_xmem
from videoseg_r1.segmentation.xmem import InferenceConfig, InferenceCore, MemoryConfig, MemoryManager, make_geometry
from videoseg_r1.segmentation.xmem.graphs import GraphedCallable
from videoseg_r1.segmentation.xmem.inference import prepare_images, prepare_masks
from videoseg_r1.segmentation.xmem.memory import _AffinityCache, query_augment, similarity
from videoseg_r1.segmentation.xmem.network import (GroupResBlock, _distribute, _group_cat, aggregate, conv_bn,
                                                    upsample_bilinear)
from videoseg_r1.video import ArrayVideo

CL = torch.channels_last


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels_last", [False, True])
def test_split_fusion_block_equals_the_concatenated_one(channels_last):
    torch.manual_seed(0)
    block = GroupResBlock(6 + 5, 7).double().eval()
    x, g = torch.randn(1, 6, 5, 9, dtype=torch.double), torch.randn(1, 3, 5, 5, 9, dtype=torch.double)
    if channels_last:
        block = block.to(memory_format=CL)
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        ref = block(torch.cat([x.unsqueeze(1).expand(-1, 3, -1, -1, -1), g], 2))
        torch.testing.assert_close(block.forward_distributed(x, g), ref, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            block.conv1.weight.add_(1.0)  # the cached split follows weight changes
        ref2 = block(torch.cat([x.unsqueeze(1).expand(-1, 3, -1, -1, -1), g], 2))
        torch.testing.assert_close(block.forward_distributed(x, g), ref2, rtol=1e-12, atol=1e-12)
    # with gradients wanted, the split keeps the autograd graph to the weights
    block.forward_distributed(x, g).sum().backward()
    assert block.conv1.weight.grad is not None and block.downsample.weight.grad is not None


def test_batchnorm_folding_equals_conv_then_bn_and_follows_changes():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, 2, 1, bias=False).double(), nn.BatchNorm2d(6).double()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -1, 1)
    bn.eval()
    x = torch.randn(2, 4, 9, 11, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)), rtol=1e-12, atol=1e-12)
        bn.running_mean.add_(0.5)  # new statistics -> refolded
        torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)), rtol=1e-12, atol=1e-12)
    bn.train()  # training: batch statistics, no folding
    torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)))


@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_bilinear_equals_interpolate(channels, channels_last):
    x = torch.randn(3, channels, 6, 7, generator=_gen(1))
    if channels_last:
        x = x.contiguous(memory_format=CL)
    for scale in (2.0, 4.0):
        out = upsample_bilinear(x, scale)
        ref = F.interpolate(x.contiguous(), scale_factor=scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        if channels_last and channels > 1:
            assert out.is_contiguous(memory_format=CL)


def test_aggregate_probabilities_are_the_softmax_of_its_logits():
    prob = torch.rand(2, 3, 8, 9, generator=_gen(2))
    prob[0, 0, 0, 0] = 0.0
    prob[0, 1, 0, 0] = 1.0  # clamped extremes
    logits, p = aggregate(prob, dim=1)
    assert logits.shape == p.shape == (2, 4, 8, 9)
    torch.testing.assert_close(p, F.softmax(logits, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.sum(1), torch.ones(2, 8, 9))


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_cat_and_distribute(channels_last):
    a = torch.randn(1, 3, 4, 5, 6, generator=_gen(3))
    b = torch.randn(1, 1, 2, 5, 6, generator=_gen(4))
    out = _group_cat([a, b], channels_last)
    torch.testing.assert_close(out, torch.cat([a, b.expand(1, 3, -1, -1, -1)], 2), rtol=0, atol=0)
    flat = out.flatten(0, 1)
    assert flat.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
    x = torch.randn(1, 7, 5, 6, generator=_gen(5))
    ref = torch.cat([x.unsqueeze(1).expand(-1, 3, -1, -1, -1), a], 2)
    torch.testing.assert_close(_distribute(x, a, channels_last), ref, rtol=0, atol=0)


def test_precomputed_query_side_of_the_affinity():
    g = _gen(6)
    mk, ms = torch.randn(8, 30, generator=g), 1 + torch.rand(1, 30, generator=g)
    qk, qe = torch.randn(2, 8, 3, 4, generator=g), torch.rand(2, 8, 3, 4, generator=g)
    aug = query_augment(qk, qe)
    assert aug.shape == (2, 12, 17)
    cache = _AffinityCache(mk, ms)
    for b in range(2):
        ref = similarity(mk, ms, qk[b].reshape(8, -1), qe[b].reshape(8, -1)).T
        torch.testing.assert_close(cache.similarity_from_aug(aug[b]), ref, rtol=1e-5, atol=1e-4)
    # the memory readout is the same with and without it
    mm = MemoryManager(MemoryConfig(top_k=3, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=3,
                                    max_long_term_elements=9))
    for i in range(5):
        gi = _gen(10 + i)
        mm.add(torch.randn(8, 3, 4, generator=gi), 1 + torch.rand(1, 3, 4, generator=gi),
               torch.randn(2, 5, 3, 4, generator=gi), torch.rand(8, 3, 4, generator=gi))
    twin = mm.clone()
    out = mm.match(qk[0], qe[0], 2, query_aug=aug[0])
    torch.testing.assert_close(out, twin.match(qk[0], qe[0], 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mm.work.use_count, twin.work.use_count, rtol=1e-5, atol=1e-6)


def test_consolidated_prototypes_follow_the_dense_formula():
    mm = MemoryManager(MemoryConfig(top_k=3, min_mid_term_frames=2, max_mid_term_frames=4, num_prototypes=3,
                                    max_long_term_elements=9))
    frames = []
    for i in range(3):
        gi = _gen(20 + i)
        frames.append((torch.randn(4, 2, 2, generator=gi), 1 + torch.rand(1, 2, 2, generator=gi),
                       torch.randn(2, 3, 2, 2, generator=gi), torch.rand(4, 2, 2, generator=gi)))
        mm.add(*frames[-1])
    mm.work.use_count.copy_(torch.arange(12, dtype=torch.float32))
    mm.work.life_count.fill_(1.0)
    work = mm.work.clone()
    mm.add(*frames[0])  # 4th frame: consolidates candidates 4..12 (frames 1 and 2)
    cand = slice(4, 12)
    proto_idx = torch.topk(work.usage()[cand], 3).indices
    ck, cs = work.key[:, cand], work.shrinkage[:, cand]
    aff = torch.softmax(similarity(ck, cs, ck[:, proto_idx], work.selection[:, cand][:, proto_idx]), dim=0)
    torch.testing.assert_close(mm.long.value, aff.T @ work.value[cand])
    torch.testing.assert_close(mm.long.shrinkage, cs @ aff)


def test_graphed_callable_static_buffers_and_cloned_outputs():
    calls = []

    def fn(a, b, flag):
        calls.append(flag)
        out = a * 2 if flag else a + 1
        return out, (None if b is None else b.sum())

    g = GraphedCallable(fn, capture=False, max_graphs=2)
    x = torch.arange(4.0)
    out1, s1 = g(x, None, True)
    out1.add_(100)  # the caller owns what it gets
    out2, _ = g(x + 1, None, True)
    torch.testing.assert_close(out2, (x + 1) * 2)
    assert s1 is None and len(g.entries) == 1
    g(x, torch.ones(3), True)  # another signature (b given)
    g(x, None, False)  # another signature (flag)
    assert len(g.entries) == 2  # least recently used dropped
    assert g(torch.zeros(2), None, True)[0].shape == (2,)
    # disabled, or CUDA capture asked for CPU tensors: plain calls, nothing cached
    for wrapped in (GraphedCallable(fn, enabled=False, capture=False), GraphedCallable(fn)):
        torch.testing.assert_close(wrapped(x, None, False)[0], x + 1)
        assert not wrapped.entries


@pytest.mark.parametrize("hidden_dim", [8, 0])
def test_core_through_static_buffers_equals_the_eager_core(hidden_dim):
    net = build_tiny_xmem(seed=0)
    if hidden_dim != net.config.hidden_dim:
        from videoseg_r1.segmentation.xmem import XMem

        torch.manual_seed(0)
        net = XMem(net.config, hidden_dim=hidden_dim).eval()
    cfg = InferenceConfig(short_side=32, mem_every=2, memory=MemoryConfig(
        top_k=5, min_mid_term_frames=2, max_mid_term_frames=3, num_prototypes=4, max_long_term_elements=12))
    eager = InferenceCore(net, cfg)
    static = InferenceCore(net, cfg, cuda_graphs=True, graph_capture=False)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 255, (12, 40, 56, 3), dtype=np.uint8))
    geo = make_geometry(40, 56, 32)
    mask = torch.zeros(2, 40, 56)
    mask[0, 5:20, 5:20] = 1
    mask[1, 25:35, 30:50] = 1
    states = [eager.new_state(2), static.new_state(2)]
    for t0 in (0, 4, 8):
        images = prepare_images(frames[t0:t0 + 4], geo, torch.float32)
        feats = [core.encode_frames(images) for core in (eager, static)]
        for i in range(4):
            t = t0 + i
            m = prepare_masks(mask, geo) if t == 0 else None
            probs = [core.step(s, f[i], mask=m, end=t == 11) for core, s, f in zip((eager, static), states, feats)]
            torch.testing.assert_close(probs[1], probs[0], rtol=0, atol=0)
    assert static.graphed_segment.replays > 0 and static.graphed_value.replays > 0
    assert states[1].memory.long.size > 0  # consolidation happened through the same path


def test_padding_the_last_key_batch_keeps_the_masks():
    net = build_tiny_xmem(seed=0)
    rng = np.random.default_rng(0)
    frames = []
    for t in range(11):
        f = rng.integers(0, 60, (40, 56, 3), dtype=np.uint8)
        f[10:25, 5 + t:20 + t] = 230
        frames.append(f)
    video = ArrayVideo(frames)
    a = np.zeros((40, 56), bool)
    a[10:25, 8:23] = True
    cfg = PropagatorConfig(device="cpu", short_side=32)
    plain = list(XMemPropagator(net, cfg, key_batch=4).propagate(video, 3, {1: a}))
    padded_prop = XMemPropagator(net, cfg, key_batch=4, pad_key_batch=True)
    seen = []
    original = padded_prop.core.encode_frames
    padded_prop.core.encode_frames = lambda images: (seen.append(images.shape[0]), original(images))[1]
    padded = list(padded_prop.propagate(video, 3, {1: a}))
    assert [t for t, _ in padded] == [t for t, _ in plain]
    assert set(seen[1:]) == {4}  # every chunk after the key frame is a full batch
    agree = np.mean([np.mean(mp[1] == mq[1]) for (_, mp), (_, mq) in zip(plain, padded)])
    assert agree > 0.995  # another conv batch size: summation order only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_give_the_eager_result_on_the_gpu():
    net = build_tiny_xmem(seed=0)
    rng = np.random.default_rng(0)
    video = ArrayVideo([rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(10)])
    a = np.zeros((40, 56), bool)
    a[10:25, 8:23] = True
    cfg = PropagatorConfig(device="cuda", dtype="float32", short_side=32)
    ref = dict(XMemPropagator(net, cfg, key_batch=4, cuda_graphs=False, pad_key_batch=True).propagate(video, 4, {1: a}))
    prop = XMemPropagator(net, cfg, key_batch=4, cuda_graphs=True)
    out = dict(prop.propagate(video, 4, {1: a}))
    assert prop.core.graphed_segment.replays > 0 and not prop.core.graphed_segment.failed
    agree = np.mean([np.mean(out[t][1] == ref[t][1]) for t in ref])
    assert agree > 0.999
    assert math.isfinite(prop.last_stats["frames_per_second"])
