"""The real Reasoner wrapper end to end on the tiny random Qwen2.5-VL (CPU, offline)."""

import numpy as np
import pytest
import torch

from videoseg_r1.config import ReasonerConfig, SamplerConfig
from videoseg_r1.reasoning.reason import reason
from videoseg_r1.reasoning.reasoner import Reasoner, ReasonerLoadError
from videoseg_r1.reasoning.sampler import sample_frames
from videoseg_r1.reasoning.tiny import TINY_SUPPRESSED_TOKENS, save_tiny_reasoner
from videoseg_r1.video import ArrayVideo

SIZE = (56, 56)  # 2x2 merged tokens per image / per pair of video frames


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_tiny_reasoner(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def reasoner(tiny_path):
    return Reasoner.from_pretrained(tiny_path, ReasonerConfig(max_new_tokens=10))


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(8)]


class VisionCounter:
    """Counts calls of the vision tower (forward hook)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.model.visual.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1

    def close(self):
        self.handle.remove()


def reference_greedy(reasoner, text, frames, as_video, ts):
    """Plain transformers generate on the same processed inputs (no shared prefill, no cache)."""
    inputs, _, _ = reasoner.prepare(text, frames, as_video=as_video, timestamps_s=ts, frame_size_hw=SIZE)
    with torch.inference_mode():
        gen = reasoner.model.generate(**inputs, max_new_tokens=10, do_sample=False,
                                      suppress_tokens=reasoner.suppress_ids, output_logits=True,
                                      return_dict_in_generate=True)
    return reasoner._samples(gen.sequences[:, inputs["input_ids"].shape[1]:], gen.logits)[0]


@pytest.mark.parametrize("as_video", [True, False])
def test_greedy_matches_plain_generate(reasoner, frames, as_video):
    ts = [0.1 * i for i in range(4)]
    reasoner.clear_vision_cache()
    out = reasoner.generate("Where is the dog?", frames[:4], as_video=as_video, timestamps_s=ts,
                            frame_keys=list(range(4)), frame_size_hw=SIZE)
    ref = reference_greedy(reasoner, "Where is the dog?", frames[:4], as_video, ts)
    assert out.samples[0].text == ref.text
    assert out.samples[0].num_tokens == ref.num_tokens == 10
    assert out.samples[0].logprob == pytest.approx(ref.logprob, abs=1e-3)
    assert out.timing.visual_tokens == (8 if as_video else 16)
    assert ("0.30" in out.prompt) and out.timing.prompt_tokens > out.timing.visual_tokens


def test_logprob_equals_teacher_forced_score(reasoner, frames):
    out = reasoner.generate("Describe.", frames[:2], as_video=False, frame_size_hw=SIZE, num_samples=3,
                            do_sample=True, temperature=1.5)
    inputs, _, _ = reasoner.prepare("Describe.", frames[:2], as_video=False, frame_size_hw=SIZE)
    prompt_ids = inputs["input_ids"]
    for s in out.samples:
        gen_ids = s.token_ids
        assert len(gen_ids) == s.num_tokens > 0
        ids = torch.cat([prompt_ids, torch.tensor([gen_ids])], dim=1)
        feed = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        tt = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(gen_ids), dtype=torch.int)], 1)
        reasoner.model.model.rope_deltas = None
        with torch.inference_mode():
            logits = reasoner.model(input_ids=ids, mm_token_type_ids=tt, **feed).logits[0].float()
        lp = torch.log_softmax(logits[prompt_ids.shape[1] - 1:-1], -1)
        score = lp.gather(-1, torch.tensor(gen_ids)[:, None]).sum().item()
        assert s.logprob == pytest.approx(score, abs=1e-2)


def test_k_samples_in_one_batched_call(reasoner, frames):
    calls = {"generate": 0, "batch": None}
    original = reasoner.model.generate

    def counting_generate(*args, **kwargs):
        calls["generate"] += 1
        calls["batch"] = (kwargs["input_ids"].shape[0], kwargs["num_return_sequences"],
                          kwargs["cache"].get_seq_length())
        return original(*args, **kwargs)

    reasoner.model.generate = counting_generate
    try:
        out = reasoner.generate("Where?", frames[:4], timestamps_s=[0, 1, 2, 3], frame_keys=[0, 1, 2, 3],
                                frame_size_hw=SIZE, num_samples=5, do_sample=True, max_new_tokens=12)
    finally:
        del reasoner.model.generate
    assert calls["generate"] == 1
    batch, k, cached = calls["batch"]
    assert (batch, k) == (1, 5) and cached == out.timing.prompt_tokens - 1  # prefill shared, done once
    assert len(out.samples) == 5 and len(set(out.texts)) == 5
    assert all(np.isfinite(s.logprob) and s.logprob < 0 and s.num_tokens > 0 for s in out.samples)
    assert out.timing.new_tokens == sum(s.num_tokens for s in out.samples)
    with pytest.raises(ValueError):
        reasoner.generate("x", frames[:2], num_samples=2, do_sample=False)


def test_vision_cache_reuse(reasoner, frames):
    reasoner.clear_vision_cache()
    counter = VisionCounter(reasoner.model)
    try:
        kw = dict(frame_size_hw=SIZE, max_new_tokens=4)
        first = reasoner.generate("A", frames[:4], frame_keys=[0, 1, 2, 3], **kw)
        assert counter.calls == 1 and first.timing.vision_units_computed == 2  # two 2-frame patches
        again = reasoner.generate("B", frames[:4], frame_keys=[0, 1, 2, 3], **kw)
        assert counter.calls == 1 and again.timing.vision_units_cached == 2
        overlap = reasoner.generate("A", frames[2:6], frame_keys=[2, 3, 4, 5], **kw)
        assert counter.calls == 2
        assert (overlap.timing.vision_units_cached, overlap.timing.vision_units_computed) == (1, 1)
        # the cached path gives exactly what a cold encoder gives
        reasoner.clear_vision_cache()
        cold = reasoner.generate("A", frames[2:6], frame_keys=[2, 3, 4, 5], **kw)
        assert cold.samples[0].text == overlap.samples[0].text
        assert cold.samples[0].logprob == pytest.approx(overlap.samples[0].logprob, abs=1e-4)
        # images are cached one by one; a different size is a different entry
        reasoner.generate("C", frames[:3], as_video=False, frame_keys=[0, 1, 2], **kw)
        img = reasoner.generate("C", frames[1:3], as_video=False, frame_keys=[1, 2], **kw)
        assert img.timing.vision_units_cached == 2
        big = reasoner.generate("C", frames[1:3], as_video=False, frame_keys=[1, 2], frame_size_hw=(84, 84),
                                max_new_tokens=4)
        assert big.timing.vision_units_computed == 2
        # without keys the pixels are hashed
        reasoner.generate("D", frames[6:8], **kw)
        hashed = reasoner.generate("E", [f.copy() for f in frames[6:8]], **kw)
        assert hashed.timing.vision_units_cached == 1
    finally:
        counter.close()


def test_htfs_and_reasoning_step_on_tiny_model(reasoner):
    rng = np.random.default_rng(1)
    video = ArrayVideo([rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(30)], fps=10)
    reasoner.clear_vision_cache()
    cfg = SamplerConfig(frame_size=56, max_frames_shown=6, interval_max_new_tokens=6, position_max_new_tokens=4)
    sampled = sample_frames(video, "the dog", reasoner, cfg)
    assert 0 <= sampled.key_segment[0] <= sampled.target_frame_idx <= sampled.key_segment[1] < 30
    interval = sampled.rounds[0]
    assert len(interval.answers) == cfg.num_interval_samples
    if sampled.key_segment == (0, 29):  # a random model gives no valid interval -> whole video
        # the position step shows the same frames as round 1: nothing re-encoded
        assert sampled.rounds[-1].timing["vision_units_computed"] == 0
    res = reason(video, sampled, "the dog", reasoner,
                 ReasonerConfig(model_input_size=84, context_frame_size=56, max_new_tokens=6))
    assert res.num_tokens > 0 and isinstance(res.text, str)
    assert all(p.error for p in res.prompts) or res.prompts == [] or res.error is None


def test_placeholder_tokens_are_suppressed(reasoner, frames):
    out = reasoner.generate("x", frames[:2], frame_size_hw=SIZE, num_samples=4, do_sample=True,
                            temperature=3.0, max_new_tokens=40)
    banned = {reasoner.tokenizer.convert_tokens_to_ids(t) for t in TINY_SUPPRESSED_TOKENS}
    assert set(reasoner.suppress_ids) <= banned
    for s in out.samples:
        ids = set(reasoner.tokenizer(s.text, add_special_tokens=False)["input_ids"])
        assert not ids & set(reasoner.suppress_ids)


def test_count_tokens(reasoner):
    assert reasoner.count_tokens("") == 0
    assert reasoner.count_tokens("<think>") == 1


def test_offline_error_names_model_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReasonerLoadError) as err:
        Reasoner.from_pretrained("videoseg-r1-test/definitely-not-cached")
    msg = str(err.value)
    assert "videoseg-r1-test/definitely-not-cached" in msg and "download" in msg
    with pytest.raises(ReasonerLoadError, match="does not exist"):
        Reasoner.from_pretrained(str(tmp_path / "missing-folder"))


@pytest.mark.parametrize("as_video", [True, False])
def test_decode_engine_equals_generate_backend(tiny_path, frames, as_video):
    """The fast engine (eager on the CPU) and the generate back-end give the same tokens, texts and
    log-likelihoods (greedy), and both return K sampled rows from one call."""
    ts = [0.1 * i for i in range(4)]
    outs = {}
    for mode in ("generate", "static"):
        r = Reasoner.from_pretrained(tiny_path, ReasonerConfig(max_new_tokens=12, decode_engine=mode))
        if mode == "static":
            assert r._decode_engine() is not None
        else:
            assert r._decode_engine() is None
        outs[mode] = r.generate("Describe the clip.", frames[:4], as_video=as_video, timestamps_s=ts,
                                frame_size_hw=SIZE)
        k = r.generate("Describe the clip.", frames[:4], as_video=as_video, timestamps_s=ts, frame_size_hw=SIZE,
                       num_samples=3, do_sample=True, temperature=1.0)
        assert len(k.samples) == 3
    a, b = outs["generate"].samples[0], outs["static"].samples[0]
    assert a.token_ids == b.token_ids and a.text == b.text and a.num_tokens == b.num_tokens
    assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_stop_string_end(reasoner):
    ids = reasoner.tokenizer.encode("<answer>[1, 2]</answer> trailing words", add_special_tokens=False)
    n = reasoner._stop_string_end(ids)
    assert reasoner.tokenizer.decode(ids[:n]).endswith("</answer>")
    assert reasoner._stop_string_end(ids[:3]) == 3


def test_grouped_vision_attention_equals_per_chunk_sdpa(tiny_path, frames):
    """The grouped vision attention gives the vision tower's per-chunk SDPA result (images of two
    sizes -> windows of several lengths, and a video) and is what the Reasoner enables."""
    from videoseg_r1.reasoning import vision_attention as va

    r = Reasoner.from_pretrained(tiny_path, ReasonerConfig(grouped_vision_attention=False))
    assert r.model.model.visual.config._attn_implementation == "sdpa"
    model, proc = r.model, r.processor
    imgs = [frames[0][:, :56], np.ascontiguousarray(np.concatenate([frames[1], frames[2]], axis=1)[:, :112])]
    inp = proc.image_processor(images=imgs, return_tensors="pt")
    vid = proc.video_processor(videos=[np.stack(frames[:4])], return_tensors="pt")
    with torch.no_grad():
        ref_i = model.model.get_image_features(inp["pixel_values"], inp["image_grid_thw"], return_dict=True).pooler_output
        ref_v = model.model.get_video_features(vid["pixel_values_videos"], vid["video_grid_thw"], return_dict=True).pooler_output
        assert va.enable_grouped_vision_attention(model)
        new_i = model.model.get_image_features(inp["pixel_values"], inp["image_grid_thw"], return_dict=True).pooler_output
        new_v = model.model.get_video_features(vid["pixel_values_videos"], vid["video_grid_thw"], return_dict=True).pooler_output
    for a, b in zip(list(ref_i) + list(ref_v), list(new_i) + list(new_v)):
        assert torch.allclose(a, b, atol=1e-5)
    r2 = Reasoner.from_pretrained(tiny_path)
    assert r2.model.model.visual.config._attn_implementation == va.ATTN_NAME


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0])
def test_video_clock_is_the_frames_shown(reasoner, frames, fps):
    # transformers falls back to 24 fps without metadata: second_per_grid_ts would be 2 / 24 whatever
    # the clip; the processor must get the shown frames' own rate (temporal patch / fps)
    ts = [5.0 + i / fps for i in range(len(frames))]
    inputs, _, _ = reasoner.prepare("q", frames, as_video=True, timestamps_s=ts, frame_size_hw=SIZE)
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([reasoner.temporal_patch_size / fps])
    # the temporal position ids then step by second_per_grid_ts * tokens_per_second per grid
    position_ids, _ = reasoner.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], None, inputs["video_grid_thw"],
        inputs["second_per_grid_ts"], attention_mask=inputs["attention_mask"])
    vid = inputs["input_ids"][0] == reasoner.model.config.video_token_id
    t_ids = sorted(set(position_ids[0, 0, vid].tolist()))
    steps = {round(b - a, 4) for a, b in zip(t_ids, t_ids[1:])}
    per_s = reasoner.model.config.vision_config.tokens_per_second
    assert len(t_ids) == len(frames) // 2
    assert len(steps) == 1 and steps.pop() == pytest.approx(reasoner.temporal_patch_size / fps * per_s, abs=1)
