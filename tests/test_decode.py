"""The decode engine (``videoseg_r1/reasoning/decode.py``) against transformers' ``generate``.

A tiny float32 Qwen2.5-VL with random weights is built from the real class; prompts are token ids
with image/video placeholders plus random pixels (no tokenizer). Runs on the CPU (the eager path of
the same step the CUDA graph captures); the graph-vs-eager test runs only where CUDA is present.
"""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from videoseg_r1.reasoning.decode import (  # noqa: E402
    DecodeEngine,
    UnsupportedModelError,
    sample_next_tokens,
    unsupported_reason,
)

V = 256
IMG, VID, VS, VE, EOS, PAD = 250, 251, 252, 253, 254, 255


def _tiny_model(seed: int = 0):
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rms_norm_eps=1e-6, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=EOS,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            initializer_range=0.2,  # peaked logits: greedy ties are improbable
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
            patch_size=2, spatial_merge_size=2, temporal_patch_size=2, window_size=8,
            fullatt_block_indexes=[1], tokens_per_second=2,
        ),
        image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS, vision_end_token_id=VE,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = PAD
    return model


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def engine(model):
    return DecodeEngine(model)


def _image_prompt(seed=1):
    g = torch.Generator().manual_seed(seed)
    # one 8x8-patch image -> (1, 4, 4) grid -> 4 merged tokens
    ids = torch.tensor([[5, 6, 7, VS] + [IMG] * 4 + [VE, 8, 9, 10]])
    return ids, dict(pixel_values=torch.randn(16, 24, generator=g), image_grid_thw=torch.tensor([[1, 4, 4]]),
                     mm_token_type_ids=(ids == IMG).int())


def _video_prompt(seed=2):
    g = torch.Generator().manual_seed(seed)
    # 4 frames -> (2, 4, 4) grid -> 8 merged tokens; temporal positions spaced by 2 tok/s * 3 s
    ids = torch.tensor([[5, VS] + [VID] * 8 + [VE, 8, 9, 11, 12]])
    return ids, dict(pixel_values_videos=torch.randn(32, 24, generator=g), video_grid_thw=torch.tensor([[2, 4, 4]]),
                     second_per_grid_ts=torch.tensor([3.0]), mm_token_type_ids=2 * (ids == VID).int())


def _reference(model, ids, n, eos=EOS, attention_mask=None, **kw):
    """generate's rows through the first EOS, and their summed raw-logit log-probabilities."""
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, eos_token_id=eos,
                         pad_token_id=PAD, **kw)
    new = out.sequences[:, ids.shape[1]:]
    scores = model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)
    rows, lls = [], []
    for r in range(new.shape[0]):
        toks = new[r].tolist()
        if eos is not None and eos in toks:
            toks = toks[: toks.index(eos) + 1]
        rows.append(toks)
        lls.append(float(scores[r, : len(toks)].sum()))
    return rows, lls


def _check_same(result, rows, lls):
    assert result.token_ids == rows
    for a, b in zip(result.log_likelihoods, lls):
        assert abs(a - b) < 1e-4, (a, b)
    for r, toks in enumerate(rows):
        assert result.num_tokens[r] == len(toks)
        assert abs(sum(result.token_logprobs[r]) - result.log_likelihoods[r]) < 1e-9


@pytest.mark.parametrize("prompt", ["image", "video", "text"])
def test_greedy_equals_generate(model, engine, prompt):
    if prompt == "image":
        ids, kw = _image_prompt()
    elif prompt == "video":
        ids, kw = _video_prompt()
    else:
        ids, kw = torch.tensor([[3, 14, 15, 92, 65, 35]]), {}
    rows, lls = _reference(model, ids, 12, **kw)
    res = engine.generate(ids, max_new_tokens=12, eos_token_id=EOS, **kw)
    _check_same(res, rows, lls)
    assert res.num_prompts == 1 and res.num_samples == 1 and not res.used_cuda_graph
    assert res.cache_bytes > 0 and res.cache_reserved_bytes >= res.cache_bytes


def test_batch_left_padded_and_k_rows(model, engine):
    ids_a, kw = _image_prompt()
    text_b = [3, 14, 15, 92, 65]
    L = ids_a.shape[1]
    ids = torch.tensor([ids_a[0].tolist(), [PAD] * (L - len(text_b)) + text_b])
    mask = torch.tensor([[1] * L, [0] * (L - len(text_b)) + [1] * len(text_b)])
    kw = dict(kw, mm_token_type_ids=(ids == IMG).int())
    rows, lls = _reference(model, ids, 10, attention_mask=mask, **kw)
    res = engine.generate(ids, mask, max_new_tokens=10, eos_token_id=EOS, **kw)
    _check_same(res, rows, lls)
    # K greedy rows per prompt share the prefill and all equal the single answer
    res_k = engine.generate(ids, mask, num_samples=3, max_new_tokens=10, eos_token_id=EOS, **kw)
    assert res_k.token_ids == [rows[0]] * 3 + [rows[1]] * 3
    assert list(res_k.rows(1)) == [3, 4, 5]
    for a, b in zip(res_k.log_likelihoods, [lls[0]] * 3 + [lls[1]] * 3):
        assert abs(a - b) < 1e-4


class _FakeTokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return "".join(f"<{i}>" for i in ids if not (skip_special_tokens and i == EOS))


def test_stops(model, engine):
    ids, kw = _image_prompt()
    free, _ = _reference(model, ids, 10, eos=None, **kw)
    toks = free[0]
    # EOS: take the 4th greedy token as the EOS id -> both stop after it
    eos = toks[3]
    first = toks.index(eos)
    rows, lls = _reference(model, ids, 10, eos=eos, **kw)
    res = engine.generate(ids, max_new_tokens=10, eos_token_id=eos, **kw)
    _check_same(res, rows, lls)
    assert res.num_tokens == [first + 1] and res.finish_reasons == ["eos"]
    assert res.text_token_ids(0) == toks[:first]
    # a list of EOS ids, and min_new_tokens forbids them early (same as generate)
    rows, lls = _reference(model, ids, 10, eos=toks[0], min_new_tokens=3, **kw)
    res = engine.generate(ids, max_new_tokens=10, eos_token_id=[toks[0], 9999], min_new_tokens=3, **kw)
    _check_same(res, rows, lls)
    # stop token sequence ending at index 5
    res = engine.generate(ids, max_new_tokens=10, eos_token_id=(), stop_token_sequences=[toks[4:6], [1, 2, 3]], **kw)
    assert res.token_ids == [toks[:6]] and res.finish_reasons == ["stop"]
    # stop string (through a tokenizer), split over two tokens
    stop = f"{toks[6]}><{toks[7]}"
    res = engine.generate(ids, max_new_tokens=10, eos_token_id=(), stop_strings=[stop], tokenizer=_FakeTokenizer(), **kw)
    assert res.token_ids == [toks[:8]] and res.finish_reasons == ["stop"]
    assert res.texts(_FakeTokenizer()) == ["".join(f"<{t}>" for t in toks[:8])]
    # length
    res = engine.generate(ids, max_new_tokens=3, eos_token_id=(), **kw)
    assert res.token_ids == [toks[:3]] and res.finish_reasons == ["length"]
    with pytest.raises(ValueError, match="tokenizer"):
        engine.generate(ids, max_new_tokens=3, stop_strings=["x"], **kw)


def test_suppress_and_repetition_penalty_match_generate(model, engine):
    ids, kw = _video_prompt()
    free, _ = _reference(model, ids, 8, eos=None, **kw)
    banned = [free[0][0], free[0][2], VID, IMG]
    rows, lls = _reference(model, ids, 8, suppress_tokens=banned, **kw)
    res = engine.generate(ids, max_new_tokens=8, eos_token_id=EOS, suppress_token_ids=banned, **kw)
    _check_same(res, rows, lls)  # log-likelihoods stay those of the raw softmax
    assert not set(banned) & set(res.token_ids[0])
    rows, lls = _reference(model, ids, 8, repetition_penalty=1.5, **kw)
    res = engine.generate(ids, max_new_tokens=8, eos_token_id=EOS, repetition_penalty=1.5, **kw)
    _check_same(res, rows, lls)


def _teacher_forced_ll(model, ids, kw, toks):
    full = torch.cat([ids, torch.tensor([toks])], dim=1)
    fkw = dict(kw)
    fkw["mm_token_type_ids"] = torch.cat([kw["mm_token_type_ids"], torch.zeros(1, len(toks), dtype=torch.int32)], 1)
    model.model.rope_deltas = None
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=torch.ones_like(full), **fkw).logits[0].float()
    lp = torch.log_softmax(logits[ids.shape[1] - 1:-1], dim=-1)
    return float(lp.gather(-1, torch.tensor(toks)[:, None]).sum())


def test_sampling_seeded_distinct_and_likelihoods(model, engine):
    ids, kw = _image_prompt()
    args = dict(num_samples=4, max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.95, eos_token_id=())
    a = engine.generate(ids, seed=123, **args, **kw)
    b = engine.generate(ids, seed=123, **args, **kw)
    c = engine.generate(ids, seed=7, **args, **kw)
    assert a.token_ids == b.token_ids and a.log_likelihoods == b.log_likelihoods
    assert len({tuple(t) for t in a.token_ids}) == 4  # K distinct samples
    assert a.token_ids != c.token_ids
    for toks, ll in zip(a.token_ids, a.log_likelihoods):
        assert ll < 0 and math.isfinite(ll)
        assert abs(_teacher_forced_ll(model, ids, kw, toks) - ll) < 1e-4
    # nucleus of one token / top_k=1 -> greedy
    greedy = engine.generate(ids, max_new_tokens=6, eos_token_id=(), **kw).token_ids[0]
    for extra in (dict(top_p=1e-6), dict(top_k=1)):
        s = engine.generate(ids, num_samples=2, max_new_tokens=6, do_sample=True, seed=1, eos_token_id=(), **extra, **kw)
        assert s.token_ids == [greedy, greedy]


def test_sample_next_tokens_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    n = 40000
    g = torch.Generator().manual_seed(0)
    ids, lp = sample_next_tokens(logits.expand(n, -1).clone(), do_sample=True, temperature=0.7, top_p=0.8,
                                 generator=g)
    p = torch.softmax(logits / 0.7, -1)
    # nucleus: smallest prefix (by probability) whose mass reaches 0.8
    keep = (torch.cumsum(p, 0) - p) < 0.8
    expected = torch.where(keep, p, torch.zeros_like(p))
    expected = expected / expected.sum()
    freq = torch.bincount(ids, minlength=6).float() / n
    assert torch.all(freq[~keep] == 0)
    assert torch.allclose(freq, expected, atol=0.012), (freq, expected)
    assert torch.allclose(lp, torch.log_softmax(logits, -1)[ids])  # raw softmax, not the warped one
    ids, _ = sample_next_tokens(logits.expand(n, -1).clone(), do_sample=True, top_k=2, generator=g)
    freq = torch.bincount(ids, minlength=6).float() / n
    two = torch.softmax(logits[:2], -1)
    assert torch.allclose(freq[:2], two, atol=0.012) and freq[2:].sum() == 0
    ids, _ = sample_next_tokens(logits[None], banned=torch.tensor([True] + [False] * 5))
    assert ids.tolist() == [1]


def test_pre_encoded_vision_inputs(model, engine):
    """``mm_encoder_outputs`` (the reasoner's cached vision features) instead of pixels."""
    ids, kw = _image_prompt()
    rows, lls = _reference(model, ids, 8, **kw)
    with torch.no_grad():
        feats = model.model.get_image_features(kw["pixel_values"], kw["image_grid_thw"], return_dict=True)
    pre = {k: v for k, v in kw.items() if k != "pixel_values"}
    res = engine.generate(ids, max_new_tokens=8, eos_token_id=EOS, mm_encoder_outputs={"image": feats}, **pre)
    _check_same(res, rows, lls)
    # mm_token_type_ids are derived from the placeholders when the caller leaves them out
    res = engine.generate(ids, max_new_tokens=8, eos_token_id=EOS,
                          **{k: v for k, v in kw.items() if k != "mm_token_type_ids"})
    _check_same(res, rows, lls)


def test_qwen3_vl(model):
    cfg = transformers.Qwen3VLConfig(
        text_config=dict(
            vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, eos_token_id=EOS,
            pad_token_id=PAD, bos_token_id=EOS, initializer_range=0.2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                             "mrope_interleaved": True},
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=2, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS, vision_end_token_id=VE,
    )
    torch.manual_seed(0)
    q3 = transformers.Qwen3VLForConditionalGeneration(cfg).eval()
    q3.generation_config.pad_token_id = PAD
    eng = DecodeEngine(q3)  # q/k norms, interleaved mrope, deepstack features in the prefill
    ids, kw = _image_prompt()
    _check_same(eng.generate(ids, max_new_tokens=10, eos_token_id=EOS, **kw), *_reference(q3, ids, 10, **kw))
    # Qwen3-VL videos: one vision_start/end group per temporal patch
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([[5, VS] + [VID] * 4 + [VE, 8, VS] + [VID] * 4 + [VE, 9, 11]])
    kw = dict(pixel_values_videos=torch.randn(32, 24, generator=g), video_grid_thw=torch.tensor([[2, 4, 4]]),
              mm_token_type_ids=2 * (ids == VID).int())
    _check_same(eng.generate(ids, max_new_tokens=10, eos_token_id=EOS, **kw), *_reference(q3, ids, 10, **kw))


def test_unsupported_models_are_named(model):
    assert unsupported_reason(model) is None

    class Other(torch.nn.Module):
        config = transformers.LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, vocab_size=10)

    assert "llama" in unsupported_reason(Other())
    with pytest.raises(UnsupportedModelError, match="generate"):
        DecodeEngine(Other())
    tc = model.config.text_config
    old = tc.layer_types
    try:
        tc.layer_types = ["sliding_attention"] * len(old)
        assert "sliding" in unsupported_reason(model)
    finally:
        tc.layer_types = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph path needs a GPU")
def test_cuda_graph_equals_eager():
    model = _tiny_model().cuda()
    ids, kw = _video_prompt()
    eager = DecodeEngine(model, use_cuda_graph=False)
    graph = DecodeEngine(model, use_cuda_graph=True)
    for args in (dict(), dict(num_samples=3, do_sample=True, seed=5, top_p=0.9)):
        a = eager.generate(ids, max_new_tokens=20, eos_token_id=(), **args, **kw)
        b = graph.generate(ids, max_new_tokens=20, eos_token_id=(), **args, **kw)
        assert b.used_cuda_graph and not a.used_cuda_graph
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.log_likelihoods, b.log_likelihoods)) < 1e-4
    rows, lls = _reference(model, ids.cuda(), 20, **{k: v.cuda() for k, v in kw.items()})
    _check_same(graph.generate(ids, max_new_tokens=20, eos_token_id=EOS, **kw), rows, lls)
    # a second prompt length reuses the buffers through another graph
    ids2, kw2 = _image_prompt()
    rows, lls = _reference(model, ids2.cuda(), 20, **{k: v.cuda() for k, v in kw2.items()})
    _check_same(graph.generate(ids2, max_new_tokens=20, eos_token_id=EOS, **kw2), rows, lls)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph path needs a GPU")
def test_fused_cuda_graph_equals_eager():
    model = _tiny_model().cuda()
    ids, kw = _image_prompt()
    a = DecodeEngine(model, use_cuda_graph=False).generate(ids, num_samples=2, max_new_tokens=16, eos_token_id=(), **kw)
    b = DecodeEngine(model, fuse=True).generate(ids, num_samples=2, max_new_tokens=16, eos_token_id=(), **kw)
    assert b.used_cuda_graph and a.token_ids == b.token_ids
    assert max(abs(x - y) for x, y in zip(a.log_likelihoods, b.log_likelihoods)) < 1e-4
