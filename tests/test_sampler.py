"""HTFS (reasoning/sampler.py) and the reasoning step (reasoning/reason.py) driven by a ScriptedReasoner."""

import numpy as np
import pytest

from videoseg_r1.config import ReasonerConfig, SamplerConfig
from videoseg_r1.reasoning.reason import reason
from videoseg_r1.reasoning.reasoner import ScriptedReasoner, load_template, render_template
from videoseg_r1.reasoning.sampler import (
    FALLBACK_NO_INTERVAL_KEEP_SEGMENT,
    FALLBACK_NO_INTERVAL_WHOLE_VIDEO,
    FALLBACK_NO_POSITION_MIDDLE,
    FrameSampler,
    IntervalRound,
    PositionRound,
    context_frame_indices,
    reference_frame_indices,
    sample_frames,
    uniform_indices,
)
from videoseg_r1.types import SampledFrames
from videoseg_r1.video import ArrayVideo


def make_video(num_frames=100, fps=10.0, h=12, w=16):
    return ArrayVideo([np.full((h, w, 3), i % 255, np.uint8) for i in range(num_frames)], fps=fps)


def interval_calls(r):
    return [c for c in r.calls if "time interval" in c.text]


def test_averaging_of_valid_intervals():
    r = ScriptedReasoner([
        ["[2, 4]", "<answer>3s - 5s</answer>", "from 2 to 4 seconds", "garbage", "[-1, 2]"],
        ["0.5"],
    ])
    out = sample_frames(make_video(), "the dog", r)
    assert isinstance(out, SampledFrames)
    # frames (20, 40), (30, 50), (20, 40) -> mean (23.3, 43.3) -> (23, 43)
    assert out.key_segment == (23, 43)
    assert out.target_frame_idx == 23 + int(21 * 0.5)
    rnd = out.rounds[0]
    assert rnd.stage == "interval" and rnd.num_valid == 3 and rnd.stop_reason == "compressed"
    assert [a.error is None for a in rnd.answers] == [True, True, True, False, False]
    assert rnd.answers[0].frame_span == [20, 40]
    assert out.fallbacks == []
    # one batched call per stage, K and the position sample count as configured
    assert [c.num_samples for c in r.calls] == [5, 5]
    assert all(c.do_sample for c in r.calls)
    assert r.calls[0].frame_keys == uniform_indices(0, 99, 32)
    assert r.calls[0].timestamps_s[1] == pytest.approx(r.calls[0].frame_keys[1] / 10.0)


def test_compression_rounds_until_short_enough():
    r = ScriptedReasoner([["[0, 8]"], ["[1, 3]"], ["0.0"]])
    out = sample_frames(make_video(), "q", r)
    stages = [x.stage for x in out.rounds]
    assert stages == ["interval", "interval", "position"]
    assert out.rounds[0].key_segment == [0, 80]  # 81 frames > 0.5 * 100 -> compress
    assert out.rounds[1].segment == [0, 80]
    assert max(r.calls[1].frame_keys) <= 80  # round 2 only shows the key segment
    assert out.key_segment == (10, 30) and out.target_frame_idx == 10
    assert out.rounds[1].stop_reason == "compressed"


def test_round_limit():
    r = ScriptedReasoner(lambda call: ["[0, 9.9]"] if "time interval" in call.text else ["0.5"])
    out = sample_frames(make_video(), "q", r, SamplerConfig(max_rounds=3))
    assert len(interval_calls(r)) == 3
    assert out.rounds[2].stop_reason == "max_rounds"
    assert out.key_segment == (0, 99) and out.fallbacks == []
    one = ScriptedReasoner(lambda call: ["[0, 9.9]"] if "time interval" in call.text else ["0.5"])
    sample_frames(make_video(), "q", one, SamplerConfig(max_rounds=1))
    assert len(interval_calls(one)) == 1


def test_top_m_by_log_likelihood():
    position = [("0.9", -1.0), ("0.1", -5.0), ("0.5", -2.0), ("0.7", -3.0), ("junk", 0.0)]
    r = ScriptedReasoner([["[2, 4]"], position])
    out = sample_frames(make_video(), "q", r, SamplerConfig(top_m=3))
    rec = out.rounds[-1]
    assert rec.top_m_indices == [0, 2, 3]
    assert rec.p_mean == pytest.approx(0.7)
    assert out.target_frame_idx == 20 + int(np.floor(21 * 0.7))
    r1 = ScriptedReasoner([["[2, 4]"], position])
    assert sample_frames(make_video(), "q", r1, SamplerConfig(top_m=1)).target_frame_idx == 20 + int(21 * 0.9)


def test_fallback_no_valid_interval_whole_video():
    r = ScriptedReasoner([["no idea", "<answer></answer>", "[a, b]"], ["0.5"]])
    out = sample_frames(make_video(), "q", r, SamplerConfig(num_interval_samples=3))
    assert out.key_segment == (0, 99)
    assert out.fallbacks == [f"{FALLBACK_NO_INTERVAL_WHOLE_VIDEO} (round 1)"]
    assert out.rounds[0].fallback == FALLBACK_NO_INTERVAL_WHOLE_VIDEO
    assert out.rounds[0].stop_reason == "fallback"
    assert len(interval_calls(r)) == 1  # no compression after a fallback


def test_fallback_later_round_keeps_segment():
    r = ScriptedReasoner([["[0, 8]"], ["nothing"], ["0.5"]])
    out = sample_frames(make_video(), "q", r)
    assert out.key_segment == (0, 80)
    assert out.fallbacks == [f"{FALLBACK_NO_INTERVAL_KEEP_SEGMENT} (round 2)"]


def test_fallback_no_valid_position_middle_frame():
    r = ScriptedReasoner([["[2, 4]"], ["1.5", "-0.1", "soon", "150%", ""]])
    out = sample_frames(make_video(), "q", r)
    assert out.target_frame_idx == (20 + 40) // 2
    assert FALLBACK_NO_POSITION_MIDDLE in out.fallbacks
    assert out.rounds[-1].fallback == FALLBACK_NO_POSITION_MIDDLE


def test_out_of_range_answers():
    # fully outside the 10 s video -> invalid; partially outside -> clamped to the last frame
    r = ScriptedReasoner([["[50, 60]", "[8, 30]"], ["1.0"]], )
    out = sample_frames(make_video(), "q", r, SamplerConfig(num_interval_samples=2))
    answers = out.rounds[0].answers
    assert answers[0].error == "interval outside the video"
    assert answers[1].frame_span == [80, 99]
    assert out.key_segment == (80, 99)
    assert out.target_frame_idx == 99  # p = 1.0 -> s + T_key, clamped to e
    # round 2 answers outside the current segment are invalid
    r2 = ScriptedReasoner([["[0, 8]"], ["[9, 9.9]", "[1, 2]"], ["0.5"]])
    out2 = sample_frames(make_video(), "q", r2, SamplerConfig(num_interval_samples=2))
    assert "outside segment" in out2.rounds[1].answers[0].error
    assert out2.key_segment == (10, 20)


def test_frame_unit_answers_count_the_frames_shown():
    r = ScriptedReasoner([["frames 10 to 30"], ["50%"]])
    out = sample_frames(make_video(), "q", r, SamplerConfig(max_rounds=1))
    shown = uniform_indices(0, 99, 32)  # frame n of the answer is the n-th frame shown (from 1)
    assert out.key_segment == (shown[9], shown[29]) == (29, 93)
    assert out.target_frame_idx == 29 + int(65 * 0.5)
    # in a later round the numbers count that round's frames, not the video's
    r2 = ScriptedReasoner([["[0, 8]"], ["frames 1 to 3"], ["0.5"]])
    out2 = sample_frames(make_video(), "q", r2, SamplerConfig(max_frames_shown=9))
    assert out2.rounds[1].shown_frame_indices == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert out2.key_segment == (0, 20)


def _clock_reasoner(answer):
    """Interval answers from ``answer(call)``; position 0.5."""
    return ScriptedReasoner(lambda call: [answer(call)] if "time interval" in call.text else ["0.5"])


def test_later_rounds_speak_clip_time():
    # round 1 -> frames 50..99 (5.0-9.9 s); round 2 shows that clip on its own clock from 0 s
    def relative(call):  # the object is at 6-7 s of the video; answers on the clock it was shown
        if call.frame_keys[0] == 0:
            return "[5, 9.9]"
        clip_zero = call.frame_keys[0] / 10 - call.timestamps_s[0]  # video time of the clock's 0 s
        return f"[{6 - clip_zero:.1f}, {7 - clip_zero:.1f}]"

    r = _clock_reasoner(relative)
    out = sample_frames(make_video(), "q", r, SamplerConfig(delta=0.2, max_rounds=2))
    second = interval_calls(r)[1]
    assert second.frame_keys[0] == 50 and second.timestamps_s[0] == 0.0
    assert second.timestamps_s[-1] == pytest.approx(4.9) and "from 0.00 s to 4.90 s" in second.text
    assert out.rounds[1].clip_start_s == pytest.approx(5.0)
    assert out.rounds[1].answers[0].parsed == {"start": 1.0, "end": 2.0, "unit": "seconds"}
    assert out.key_segment == (60, 70) and out.fallbacks == []
    # a reasoner that answers in video time against a clip-time prompt is not silently misplaced:
    # 6-7 s of a clip that starts at 5 s lies past the video's end, which the trace records
    absolute = _clock_reasoner(lambda call: "[5, 9.9]" if call.frame_keys[0] == 0 else "[6, 7]")
    out = sample_frames(make_video(), "q", absolute, SamplerConfig(delta=0.2, max_rounds=2))
    assert out.rounds[1].answers[0].error == "interval outside the video"
    assert out.key_segment == (50, 99) and out.fallbacks == [f"{FALLBACK_NO_INTERVAL_KEEP_SEGMENT} (round 2)"]


def test_rounds_are_typed_and_serialise():
    r = ScriptedReasoner([["[2, 4]"], ["0.5"]])
    out = sample_frames(make_video(), "q", r)
    assert isinstance(out.rounds[0], IntervalRound) and isinstance(out.rounds[1], PositionRound)
    as_dict = out.to_dict()["rounds"]
    assert as_dict[0]["stage"] == "interval" and as_dict[0]["answers"][0]["frame_span"] == [20, 40]
    assert as_dict[1]["stage"] == "position" and as_dict[1]["target_frame_idx"] == out.target_frame_idx


def test_training_and_inference_share_the_context_frames():
    from videoseg_r1.training.samples import context_frame_indices as training_context

    # few frames outside the key segment: references from outside first, topped up from inside
    for n, seg, target in [(20, (1, 17), 9), (12, (0, 11), 3), (40, (5, 30), 30), (6, (2, 3), 2)]:
        key, refs = context_frame_indices(n, seg, target, 2, 4)
        assert training_context(n, seg, target, 2, 4) == (key, refs)
        assert target not in key + refs and len(set(key + refs)) == len(key + refs)
        outside = [i for i in range(n) if i < seg[0] or i > seg[1]]
        assert set(refs) >= set(outside[:4]) or len(outside) > 4
    r = ScriptedReasoner([["[0.1, 1.7]"], ["0.5"]])
    out = sample_frames(make_video(20), "q", r, SamplerConfig(num_key_frames=2, num_reference_frames=4, max_rounds=1))
    key, refs = context_frame_indices(20, out.key_segment, out.target_frame_idx, 2, 4)
    assert (out.key_frame_indices, out.reference_frame_indices) == (key, refs)


def test_key_and_reference_frames():
    r = ScriptedReasoner([["[2, 4]"], ["0.5"]])
    out = sample_frames(make_video(), "q", r, SamplerConfig(num_reference_frames=4, num_key_frames=3))
    s, e = out.key_segment
    assert all(i < s or i > e for i in out.reference_frame_indices)
    assert len(out.reference_frame_indices) == 4
    assert len(out.key_frame_indices) == 3 and out.target_frame_idx not in out.key_frame_indices
    assert all(s <= i <= e for i in out.key_frame_indices)
    # too few frames outside the key segment -> topped up from inside, excluding given frames
    refs = reference_frame_indices(10, (1, 9), 4, exclude=[5])
    assert len(refs) == 4 and 0 in refs and 5 not in refs


def test_tiny_videos():
    single = sample_frames(make_video(1), "q", ScriptedReasoner([]))
    assert single.key_segment == (0, 0) and single.target_frame_idx == 0 and single.rounds == []
    two = sample_frames(make_video(2), "q", ScriptedReasoner([["[0, 0.05]"], ["0.3"]]))
    assert two.key_segment == (0, 0) and two.target_frame_idx == 0  # 1 frame <= 0.5 * 2


def test_uniform_indices():
    assert uniform_indices(0, 9, 32) == list(range(10))
    assert uniform_indices(0, 99, 5) == [0, 25, 50, 74, 99]
    assert uniform_indices(5, 4, 3) == [] and uniform_indices(3, 9, 1) == [6]


def test_config_validation():
    with pytest.raises(ValueError):
        FrameSampler(ScriptedReasoner([]), SamplerConfig(delta=0))
    with pytest.raises(ValueError):
        FrameSampler(ScriptedReasoner([]), SamplerConfig(top_m=0))


def test_templates_render():
    text = render_template("interval", query="the cat", num_frames=3, start_s=0.0, end_s=2.5)
    assert '"the cat"' in text and "2.50 s" in text and "{" not in text
    reasoning = render_template("reasoning", query="q", frame_desc="840x840 pixels", coord_desc="pixels",
                                answer_example="[]")
    assert "neg_point_2d" in reasoning and "bbox_2d" in reasoning and "point_2d" in reasoning
    difficulty = render_template("difficulty", query="q")
    for key in ("scene_complexity", "segmentation_challenge", "temporal_ambiguity",
                "motion_complexity", "linguistic_ambiguity"):
        assert key in difficulty
    assert "{query}" in load_template("position")
    with pytest.raises(ValueError):
        load_template("nope")


# ------------------------------------------------------------------ the reasoning step


def _sampled(target=5):
    return SampledFrames(num_frames=10, key_segment=(3, 7), target_frame_idx=target,
                         key_frame_indices=[3, 7], reference_frame_indices=[0, 9])


def test_reason_maps_prompts_to_original_pixels():
    video = make_video(10, h=420, w=1680)
    answer = ('<think>the dog on the left</think><answer>[{"bbox_2d": [0, 0, 420, 420], '
              '"point_2d": [210, 210], "neg_point_2d": [500, 100]}, {"bbox_2d": [1, 2, 3]}]</answer>')
    r = ScriptedReasoner([[(answer, -3.5)]])
    res = reason(video, _sampled(), "the dog", r, ReasonerConfig(model="scripted"))
    call = r.calls[0]
    assert call.num_frames == 5 and not call.as_video and call.num_samples == 1 and not call.do_sample
    assert call.frame_keys[-1] == ("target", 5, 840)
    p0, p1 = res.prompts
    assert p0.box_xyxy == (0.0, 0.0, 840.0, 210.0)
    assert p0.points_xy == [(420.0, 105.0), (1000.0, 50.0)] and p0.labels == [1, 0]
    assert p0.error is None and p0.usable
    assert not p1.usable and "bbox_2d has 3 values" in p1.error
    assert res.think == "the dog on the left" and res.reasoning_tokens == 5
    assert res.logprob == -3.5 and res.shown_frame_indices == [0, 3, 7, 9, 5]
    assert res.trace()["prompts"][0]["labels"] == [1, 0]


@pytest.mark.parametrize("text,error", [
    ("<think>hmm</think><answer>[]</answer>", "empty answer list"),
    ("complete nonsense", "no JSON"),
    ("", "empty answer"),
])
def test_reason_malformed_output_never_raises(text, error):
    res = reason(make_video(10), _sampled(), "q", ScriptedReasoner([[text]]),
                 ReasonerConfig(model="scripted", use_context_frames=False))
    assert res.prompts == [] and error in res.error


def test_reason_target_only_mode():
    r = ScriptedReasoner([["<answer>[]</answer>"]])
    reason(make_video(10), _sampled(), "q", r, ReasonerConfig(model="scripted", use_context_frames=False))
    assert r.calls[0].num_frames == 1


def test_frames_as_images_when_configured():
    r = ScriptedReasoner([["[2.0, 4.0]"], ["0.5"]])
    sampled = sample_frames(make_video(), "the dog", r, SamplerConfig(as_video=False, max_frames_shown=8))
    assert sampled.target_frame_idx == 30
    assert [c.as_video for c in r.calls] == [False, False] and all(c.num_frames == 8 for c in r.calls)
    r = ScriptedReasoner([["[2.0, 4.0]"], ["0.5"]])
    sample_frames(make_video(), "the dog", r)
    assert [c.as_video for c in r.calls] == [True, True]


@pytest.mark.parametrize("model_type, override, box", [
    ("qwen2_5_vl", "auto", [0, 0, 420, 420]),  # pixels of the 840 px input frame
    ("qwen2_vl", "auto", [0, 0, 500, 1000]),  # 0-1000 grid over the frame
    ("qwen3_vl", "auto", [0, 0, 500, 1000]),
    ("qwen3_vl", "absolute", [0, 0, 420, 840]),  # the config overrides the family
])
def test_coordinates_per_model_family(model_type, override, box):
    video = make_video(10, h=420, w=1680)
    answer = f'<think>x</think><answer>[{{"bbox_2d": {box}, "point_2d": [{box[2] // 2}, {box[3] // 2}]}}]</answer>'
    r = ScriptedReasoner([[answer]], model_type=model_type)
    res = reason(video, _sampled(), "the dog", r, ReasonerConfig(model="scripted", coordinates=override))
    assert res.prompts[0].box_xyxy == (0.0, 0.0, 840.0, 419.0 if box[3] in (1000, 840) else 210.0)
    normalized = model_type != "qwen2_5_vl" and override == "auto"
    assert ("0 to 1000" in r.calls[0].text) == normalized and ("840x840 pixels" in r.calls[0].text) != normalized


def test_prefilled_think_and_qwen3_timestamps():
    from types import SimpleNamespace

    from videoseg_r1.reasoning.reasoner import Reasoner

    # Qwen3-VL's processor writes the timestamps itself: no line of ours in a video prompt
    for model_type, ours in (("qwen3_vl", False), ("qwen2_5_vl", True)):
        msgs = Reasoner.build_messages(SimpleNamespace(model_type=model_type), "q", 2, True, [0.0, 1.0])
        assert ("Frame timestamps" in msgs[0]["content"][-1]["text"]) == ours
    # a chat template that opens <think> itself: the answer is read as if the tag were written
    video = make_video(10)
    r = ScriptedReasoner([['the dog</think><answer>[{"bbox_2d": [1, 1, 5, 5], "point_2d": [2, 2]}]</answer>']])
    r.generate = _with_prompt_suffix(r.generate, "<think>\n")
    res = reason(video, _sampled(), "q", r, ReasonerConfig(model="scripted"))
    assert res.think == "the dog" and res.error is None


def _with_prompt_suffix(generate, suffix):
    def wrapped(*args, **kwargs):
        out = generate(*args, **kwargs)
        out.prompt = out.prompt + suffix
        return out
    return wrapped
