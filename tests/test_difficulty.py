"""Task difficulty: rater answers, the annotation heuristic, the cache and `rate-difficulty`."""

import json

import numpy as np
import pytest

from videoseg_r1.reasoning.reasoner import ScriptedReasoner
from videoseg_r1.training.difficulty import (
    DIFFICULTY_CRITERIA,
    AnnotationFeatures,
    DifficultyCache,
    MLLMRater,
    annotation_features,
    difficulty_from_ratings,
    expression_difficulty,
    heuristic_ratings,
    parse_ratings,
)

GOOD = ('<think>busy</think><answer>{"scene_complexity": 8, "segmentation_challenge": 6, '
        '"temporal_ambiguity": 3, "motion_complexity": 5, "linguistic_ambiguity": 3}</answer>')


def test_parse_ratings():
    r = parse_ratings(GOOD)
    assert list(r) == list(DIFFICULTY_CRITERIA) and difficulty_from_ratings(r) == pytest.approx(5.0)
    assert parse_ratings("<answer>[1, 2, 3, 4, 5]</answer>")["linguistic_ambiguity"] == 5.0
    assert parse_ratings("<answer>{'Scene Complexity': 2, 'segmentation_challenge': 2, 'temporal_ambiguity': 2,"
                         " 'motion_complexity': 2, 'linguistic_ambiguity': 2}</answer>") is not None
    for bad in ["", "no json", "<answer>[1, 2, 3, 4]</answer>", "<answer>[1, 2, 3, 4, 11]</answer>",
                "<answer>[0, 2, 3, 4, 5]</answer>", '<answer>{"scene_complexity": 3}</answer>',
                "<answer>[true, 2, 3, 4, 5]</answer>", None]:
        assert parse_ratings(bad) is None, bad


def test_heuristic_is_documented_and_monotone():
    easy = AnnotationFeatures(1, 0.25, 0.0, 0.0, 3)
    assert difficulty_from_ratings(heuristic_ratings(easy)) == pytest.approx(1.0)
    hard = AnnotationFeatures(5, 0.001, 1.0, 0.05, 20, reasoning=True)
    assert difficulty_from_ratings(heuristic_ratings(hard)) == pytest.approx(10.0)
    base = difficulty_from_ratings(heuristic_ratings(AnnotationFeatures(2, 0.05, 0.2, 0.01, 8)))
    for change in (dict(num_objects=3), dict(mean_area_norm=0.01), dict(absent_fraction=0.5),
                   dict(motion_norm=0.03), dict(query_words=15), dict(reasoning=True)):
        feats = AnnotationFeatures(**{**dict(num_objects=2, mean_area_norm=0.05, absent_fraction=0.2,
                                             motion_norm=0.01, query_words=8), **change})
        assert difficulty_from_ratings(heuristic_ratings(feats)) > base, change


def test_annotation_features_from_masks():
    t, h, w = 10, 50, 100
    m = np.zeros((t, h, w), bool)
    for k in range(t):
        if k < 8:  # absent in the last 2 frames
            m[k, 10:20, 5 * k:5 * k + 10] = True  # moves 5 px per frame
    f = annotation_features({1: m}, "the box moving right")
    assert f.num_objects == 1 and f.query_words == 4
    assert f.absent_fraction == pytest.approx(0.2)
    assert f.mean_area_norm == pytest.approx(100 / 5000)
    assert f.motion_norm == pytest.approx(5 / np.hypot(50, 100), rel=1e-3)


def test_mllm_rater_averages_valid_answers_and_falls_back():
    reasoner = ScriptedReasoner([[GOOD, "garbage", "<answer>[2, 2, 2, 2, 2]</answer>"]])
    rater = MLLMRater.from_reasoner(reasoner, num_samples=3)
    res = rater.rate([np.zeros((28, 28, 3), np.uint8)] * 2, "the dog", [0.0, 1.0])
    assert res.difficulty == pytest.approx((5.0 + 2.0) / 2)
    call = reasoner.calls[0]
    assert '"the dog"' in call.text and call.num_samples == 3 and call.do_sample and call.as_video
    assert MLLMRater.from_reasoner(ScriptedReasoner([["nothing"]])).rate([], "x").difficulty is None


class _Expr:
    def __init__(self, extra=None):
        self.video, self.exp_id, self.text, self.type_id = "v", "0", "the small red box", 0
        self.extra = extra or {}


class _Reader:
    def object_masks(self, expr):
        m = np.zeros((4, 20, 20), bool)
        m[:, 5:10, 5:10] = True
        return {1: m}


def test_expression_difficulty_priorities(tmp_path):
    cache = DifficultyCache(tmp_path / "d.json")
    rec = expression_difficulty(_Reader(), _Expr({"difficulty": 6.5}), "syn", cache)
    assert (rec.difficulty, rec.source) == (6.5, "synthetic")
    rec = expression_difficulty(_Reader(), _Expr(), "other", cache)
    assert rec.source == "heuristic" and 1 <= rec.difficulty <= 10
    bad_rater = MLLMRater(lambda frames, prompt, n, ts: ["no"])
    rec = expression_difficulty(_Reader(), _Expr(), "third", None, rater=bad_rater)
    assert rec.source == "heuristic_fallback"
    good_rater = MLLMRater(lambda frames, prompt, n, ts: [GOOD])
    rec = expression_difficulty(_Reader(), _Expr(), "fourth", cache, rater=good_rater,
                                frames_for_rater=lambda: ([], None))
    assert (rec.difficulty, rec.source) == (5.0, "mllm")
    cache.save()
    again = DifficultyCache(tmp_path / "d.json")
    assert len(again) == 3 and again.get("fourth/v/0") == 5.0
    # cached values win over everything
    assert expression_difficulty(_Reader(), _Expr({"difficulty": 1.0}), "fourth", again).difficulty == 5.0


def test_cache_rejects_a_corrupt_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid cache"):
        DifficultyCache(path)


def test_rate_difficulty_cli_resumes(tmp_path):
    from videoseg_r1.cli import main
    from videoseg_r1.data.synthetic import generate

    root = generate(tmp_path / "syn", num_videos=1, frames=6, size=(64, 48), seed=1, splits=["train"], workers=1)
    out = tmp_path / "difficulty.json"
    args = ["rate-difficulty", "--benchmark", "synthetic", "--data-root", str(root), "--output", str(out)]
    assert main(args + ["--limit", "2"]) == 0
    first = json.loads(out.read_text())["records"]
    assert len(first) == 2 and all(r["source"] == "synthetic" for r in first.values())
    assert main(args) == 0
    assert len(json.loads(out.read_text())["records"]) > 2
    assert main(["rate-difficulty", "--benchmark", "synthetic", "--data-root", str(tmp_path / "nope"),
                 "--output", str(out)]) == 2
