"""SAM2 key-frame segmentation with a tiny random transformers SAM2 (CPU, offline)."""

import numpy as np
import pytest

from videoseg_r1.config import SegmenterConfig
from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter, build_sam_prompt, load_sam2
from videoseg_r1.segmentation.tiny import build_tiny_sam2, save_sam2
from videoseg_r1.types import ObjectPrompt

H, W = 48, 72


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sam2(seed=0, image_size=64)


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _seg(tiny, **flags):
    model, processor = tiny
    return KeyFrameSegmenter(SegmenterConfig(device="cpu", **flags), model=model, processor=processor)


def _prompts():
    return [ObjectPrompt(0, (5, 5, 30, 30), [(15, 15), (40, 40)], [1, 0]),
            ObjectPrompt(1, (35, 10, 70, 40), [(50, 25), (20, 40)], [1, 0]),
            ObjectPrompt(2, None, [], [], error="answer is not valid JSON"),
            ObjectPrompt(3, None, [(30, 30)], [1])]


def test_masks_at_original_resolution_and_reasons(tiny, frame):
    result = _seg(tiny).segment(frame, _prompts())
    assert sorted(result.masks) == [0, 1, 3]
    for m in result.masks.values():
        assert m.shape == (H, W) and m.dtype == bool
    assert set(result.scores) == {0, 1, 3} and all(isinstance(s, float) for s in result.scores.values())
    assert result.errors == {2: "answer is not valid JSON"}
    assert result.notes() == ["object 2: no mask (answer is not valid JSON)"]


def test_batched_call_equals_one_object_at_a_time(tiny, frame):
    seg = _seg(tiny)
    together = seg.segment(frame, _prompts()[:2])
    for p in _prompts()[:2]:
        alone = seg.segment(frame, [p])
        assert np.mean(alone.masks[p.obj_idx] == together.masks[p.obj_idx]) > 0.999
        assert alone.scores[p.obj_idx] == pytest.approx(together.scores[p.obj_idx], abs=1e-4)


def test_deterministic(tiny, frame):
    a = _seg(tiny).segment(frame, _prompts())
    b = _seg(tiny).segment(frame, _prompts())
    for obj in a.masks:
        np.testing.assert_array_equal(a.masks[obj], b.masks[obj])


def test_ablation_flags_shape_the_prompt():
    p = ObjectPrompt(0, (1, 2, 10, 12), [(5, 6), (20, 20)], [1, 0])
    full = build_sam_prompt(p, SegmenterConfig())
    assert full.box_xyxy == (1.0, 2.0, 10.0, 12.0) and full.labels == (1, 0)
    box_only = build_sam_prompt(p, SegmenterConfig(use_positive_point=False, use_negative_point=False))
    assert box_only.box_xyxy is not None and box_only.points_xy == ()
    points_only = build_sam_prompt(p, SegmenterConfig(use_box=False))
    assert points_only.box_xyxy is None and points_only.labels == (1, 0)
    # only a negative point left: nothing to segment
    reason = build_sam_prompt(p, SegmenterConfig(use_box=False, use_positive_point=False))
    assert isinstance(reason, str) and "no usable" in reason
    bad = build_sam_prompt(ObjectPrompt(1, (0, 0, float("nan"), 3), [], []), SegmenterConfig())
    assert isinstance(bad, str)


def test_box_only_ablation_runs(tiny, frame):
    result = _seg(tiny, use_positive_point=False, use_negative_point=False).segment(frame, _prompts())
    assert sorted(result.masks) == [0, 1] and sorted(result.errors) == [2, 3]


def test_loads_from_a_saved_folder_and_offline_error_names_the_id(tiny, frame, tmp_path):
    folder = save_sam2(*tiny, tmp_path / "tiny-sam2")
    seg = KeyFrameSegmenter(SegmenterConfig(model=str(folder), device="cpu"))
    ref = _seg(tiny).segment(frame, _prompts()[:1])
    out = seg.segment(frame, _prompts()[:1])
    np.testing.assert_array_equal(out.masks[0], ref.masks[0])
    with pytest.raises(RuntimeError, match="facebook/sam2.1-hiera-large"):
        load_sam2("facebook/sam2.1-hiera-large")


def test_rejects_a_non_rgb_frame(tiny):
    with pytest.raises(ValueError, match="RGB"):
        _seg(tiny).segment(np.zeros((H, W), np.uint8), _prompts())
