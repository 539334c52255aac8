"""End to end on CPU: HTFS -> reasoning -> SAM2 -> XMem with tiny models on a synthetic video."""

import json

import pytest

from videoseg_r1.config import PipelineConfig
from videoseg_r1.data.synthetic import generate_video
from videoseg_r1.masks import mask_box_xyxy
from videoseg_r1.pipeline import FixedFrameSelector, VideoSegR1Pipeline
from videoseg_r1.reasoning.reasoner import ScriptedReasoner
from videoseg_r1.reasoning.sampler import FrameSampler
from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter
from videoseg_r1.segmentation.propagation import XMemPropagator
from videoseg_r1.segmentation.tiny import build_tiny_sam2, build_tiny_xmem
from videoseg_r1.types import ObjectPrompt
from videoseg_r1.video import ArrayVideo


@pytest.fixture(scope="module")
def synth():
    return generate_video(seed=3, split="valid", index=0, frames=16, size=(96, 64))


@pytest.fixture(scope="module")
def video(synth):
    return ArrayVideo(list(synth.frames), fps=synth.fps, name="synthetic.mp4")


@pytest.fixture(scope="module")
def seg_parts():
    sam, proc = build_tiny_sam2()
    return (KeyFrameSegmenter(model=sam, processor=proc, device="cpu"),
            XMemPropagator(network=build_tiny_xmem(), device="cpu"))


def _script(answer_box, answer_point):
    """Interval answers, position answers, then one reasoning answer in 840x840 model pixels."""
    def respond(call):
        if "time interval" in call.text:
            return ["<answer>[0.3, 0.9]</answer>", "<answer>[0.5, 1.1]</answer>", "garbage"]
        if "relative position" in call.text:
            return [("<answer>0.5</answer>", -1.0), ("<answer>0.9</answer>", -9.0), ("<answer>50%</answer>", -2.0)]
        return [f"<think>The target is the shape on the left.</think><answer>[{{\"bbox_2d\": {answer_box}, "
                f"\"point_2d\": {answer_point}, \"neg_point_2d\": [0, 0]}}]</answer>"]
    return respond


def _pipeline(seg_parts, script):
    segmenter, propagator = seg_parts
    reasoner = ScriptedReasoner(script)
    return VideoSegR1Pipeline(PipelineConfig(), reasoner=reasoner, frame_selector=FrameSampler(reasoner),
                              segmenter=segmenter, propagator=propagator)


def test_end_to_end_with_scripted_reasoner(video, seg_parts):
    pipe = _pipeline(seg_parts, _script([100, 200, 500, 600], [300, 400]))
    result = pipe(video, "  the red circle  ")
    t = result.trace
    assert t.query == "the red circle" and t.num_frames == 16
    assert set(t.stage_seconds) == {"sampling", "reasoning", "keyframe_segmentation", "propagation"}
    assert result.tracks.shape == (16, 64, 96) and result.tracks.obj_ids == [1]
    # key segment from the mean interval, target from the top-M positions
    s, e = result.sampled.key_segment
    assert 0 <= s <= result.target_frame_idx <= e < 16
    assert t.reasoning_text.startswith("<think>") and t.reasoning_tokens > 0
    p = result.prompts[0]
    # 840 -> 96 x 64 mapping of the box
    assert p.box_xyxy == pytest.approx((100 * 96 / 840, 200 * 64 / 840, 500 * 96 / 840, 600 * 64 / 840))
    assert p.labels == [1, 0]
    assert (result.tracks.frame(result.target_frame_idx)[1] == result.key_masks[1]).all()
    json.dumps(t.to_dict())  # the trace is JSON-able


def test_malformed_answer_gives_empty_masks_and_recorded_reason(video, seg_parts):
    def respond(call):
        if "time interval" in call.text or "relative position" in call.text:
            return ["no idea"]
        return ["I think it is the dog."]
    result = _pipeline(seg_parts, respond)(video, "the dog")
    assert result.tracks.obj_ids == [] and not result.tracks.union().any()
    assert any("no usable object" in f for f in result.trace.fallbacks)
    assert any("fallback" in f or "whole" in f or "middle" in f for f in result.trace.fallbacks)


def test_given_prompts_and_fixed_frame(synth, video, seg_parts):
    segmenter, propagator = seg_parts
    pipe = VideoSegR1Pipeline(PipelineConfig(), segmenter=segmenter, propagator=propagator)
    t = 5
    mask = synth.label_maps[t] == 1
    x1, y1, x2, y2 = mask_box_xyxy(mask)
    prompts = [ObjectPrompt(obj_idx=0, box_xyxy=(x1, y1, x2, y2), points_xy=[((x1 + x2) / 2, (y1 + y2) / 2)], labels=[1]),
               ObjectPrompt(obj_idx=1, error="no usable box or point")]
    result = pipe(video, "object one", prompts=prompts, target_frame_idx=t)
    assert result.target_frame_idx == t and result.tracks.obj_ids == [1]
    assert any("object 1" in n for n in result.trace.notes)
    first = FixedFrameSelector("first").sample(video, "q")
    assert first.target_frame_idx == 0 and FixedFrameSelector("middle").sample(video, "q").target_frame_idx == 8


def test_bad_input(video, seg_parts, tmp_path):
    pipe = _pipeline(seg_parts, _script([1, 1, 2, 2], [1, 1]))
    with pytest.raises(ValueError, match="query is empty"):
        pipe(video, "   ")
    with pytest.raises(Exception, match="not found"):
        pipe(tmp_path / "missing.mp4", "the dog")


# ---------------------------------------------------------------- vision cache ownership (issue 15 item 10)


def test_a_new_video_object_never_gets_an_old_ones_vision_features(tmp_path, monkeypatch):
    """The reasoner caches features by frame index; a new video must start from an empty cache even
    when it carries the same name, length and id as a collected one (CPython reuses the memory of a
    freed object, and with it the id). The pipeline module's ``id`` is made constant here to force
    that collision deterministically."""
    import gc

    import numpy as np

    import videoseg_r1.pipeline as pipeline_module
    from videoseg_r1.config import ReasonerConfig
    from videoseg_r1.reasoning.reasoner import Reasoner
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    reasoner = Reasoner.from_pretrained(save_tiny_reasoner(tmp_path / "tiny"),
                                        ReasonerConfig(model_input_size=56, context_frame_size=56, max_new_tokens=3))
    pipe = VideoSegR1Pipeline(PipelineConfig(), reasoner=reasoner,
                              frame_selector=FixedFrameSelector("first", num_context_frames=2))
    monkeypatch.setattr(pipeline_module, "id", lambda obj: 1234, raising=False)
    rng = np.random.default_rng(0)

    def new_video():  # same name ("<array>"), length and size every time; different pixels
        return ArrayVideo([rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(4)], fps=4)

    a = new_video()
    pipe(a, "the dog")
    assert reasoner.vision_cache_size > 0
    before = reasoner.vision_cache_hits
    pipe(a, "the cat")  # the same object: its features are reused
    assert reasoner.vision_cache_hits > before
    del a
    gc.collect()
    b = new_video()
    hits, misses = reasoner.vision_cache_hits, reasoner.vision_cache_misses
    got = pipe(b, "the dog")
    assert reasoner.vision_cache_hits == hits  # nothing of a's was served
    assert reasoner.vision_cache_misses > misses
    reasoner.clear_vision_cache()  # b's answer is what a cold cache gives
    cold = pipe(ArrayVideo(b.frames, fps=4), "the dog")
    assert got.trace.reasoning_text == cold.trace.reasoning_text
    assert got.reasoning.logprob == pytest.approx(cold.reasoning.logprob, abs=1e-5)


def test_the_frame_selectors_reasoner_cache_is_emptied_too(video):
    class Counting:
        def __init__(self):
            self.clears = 0

        def clear_vision_cache(self):
            self.clears += 1

    class Selector(FixedFrameSelector):
        pass

    reasoner, stage1 = Counting(), Counting()
    selector = Selector(0)
    selector.reasoner = stage1
    pipe = VideoSegR1Pipeline(PipelineConfig(), reasoner=reasoner, frame_selector=selector)
    given = [ObjectPrompt(obj_idx=0, box_xyxy=None, points_xy=[], labels=[], error="none")]
    pipe(video, "x", prompts=given, target_frame_idx=0)
    pipe(video, "x", prompts=given, target_frame_idx=0)  # same video object: kept
    assert (reasoner.clears, stage1.clears) == (1, 1)
    pipe(ArrayVideo(video.frames, fps=video.fps, name=str(video.path)), "x", prompts=given, target_frame_idx=0)
    assert (reasoner.clears, stage1.clears) == (2, 2)
    shared = Counting()
    selector.reasoner = shared
    pipe2 = VideoSegR1Pipeline(PipelineConfig(), reasoner=shared, frame_selector=selector)
    pipe2(video, "x", prompts=given, target_frame_idx=0)
    assert shared.clears == 1  # one model behind both stages: emptied once
