"""Training samples: GT geometry, target-frame rules, context frames, prompt layout, SFT answers."""

import json

import numpy as np
import pytest

from videoseg_r1.rewards import REWARD_FUNCS, total_reward
from videoseg_r1.training.samples import (
    SampleConfig,
    BuildReport,
    build_dataset,
    build_prompt,
    choose_target_frame,
    context_frame_indices,
    key_segment_around,
    mask_box_xyxy,
    mask_centre_point,
    negative_point_target,
    object_targets,
)
from videoseg_r1.training.sft import sft_answer_text

SMALL = dict(model_input_size=56, context_frame_size=56, num_key_frames=2, num_reference_frames=1)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from videoseg_r1.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("syn") / "data", num_videos=2, frames=8, size=(96, 64), seed=0,
                    splits=["train"], workers=1)


@pytest.fixture(scope="module")
def synthetic_dataset(synthetic_root):
    from videoseg_r1.data.registry import get_reader

    reader = get_reader("synthetic", synthetic_root, "train")
    report = BuildReport()
    ds = build_dataset(reader, "synthetic", SampleConfig(**SMALL), report)
    return ds, reader, report


def test_box_and_centre_point():
    m = np.zeros((20, 30), bool)
    m[5:15, 4:24] = True  # 10 rows x 20 cols
    assert mask_box_xyxy(m) == [4, 5, 23, 14]  # inclusive
    x, y = mask_centre_point(m)
    assert m[y, x] and 13 <= x <= 14 and 9 <= y <= 10
    # an L shape: the farthest-from-border point lies inside, not at the bbox centre
    l_shape = np.zeros((40, 40), bool)
    l_shape[0:40, 0:10] = True
    l_shape[30:40, 0:40] = True
    x, y = mask_centre_point(l_shape)
    assert l_shape[y, x]
    assert mask_box_xyxy(np.zeros((3, 3), bool)) is None and mask_centre_point(np.zeros((3, 3), bool)) is None


def test_negative_point_is_just_outside_all_targets():
    from scipy.ndimage import distance_transform_cdt

    union = np.zeros((60, 60), bool)
    union[20:40, 20:40] = True
    p = negative_point_target(union, (30, 30))
    d = distance_transform_cdt(~union, metric="taxicab")[p[1], p[0]]
    assert 5 <= d <= 20
    assert negative_point_target(np.ones((5, 5), bool), (2, 2)) is None


def test_object_targets_resize_to_model_input():
    m = np.zeros((100, 200), bool)
    m[10:20, 100:150] = True
    targets, union = object_targets({7: m}, (56, 56))
    (t,) = targets
    assert union.shape == (56, 56)
    x1, y1, x2, y2 = t.box_xyxy
    assert abs(x1 - 28) <= 1 and abs(x2 - 41) <= 1 and abs(y1 - 5.6) <= 1 and abs(y2 - 10.6) <= 1
    assert union[t.point_xy[1], t.point_xy[0]] and not union[t.neg_point_xy[1], t.neg_point_xy[0]]


def test_target_frame_rules_prefer_all_targets_visible():
    import random

    t, h, w = 6, 10, 10
    a = np.zeros((t, h, w), bool)
    b = np.zeros((t, h, w), bool)
    a[:, 0:5, 0:5] = True
    a[1, :, :] = True  # frame 1 is the largest, but b is absent there
    b[3:5, 6:10, 6:10] = True  # 16 px = SAMPLE_MIN_AREA_PX
    masks = {1: a, 2: b}
    rng = random.Random(0)
    assert choose_target_frame(masks, SampleConfig(target_frame_rule="largest"), rng) in (3, 4)
    assert choose_target_frame(masks, SampleConfig(target_frame_rule="first"), rng) == 3
    assert choose_target_frame(masks, SampleConfig(target_frame_rule="given"), rng, given=4) == 4
    assert choose_target_frame(masks, SampleConfig(target_frame_rule="given"), rng, given=0) == 3
    assert choose_target_frame({1: np.zeros((3, 4, 4), bool)}, SampleConfig(), rng) is None
    with pytest.raises(ValueError):
        SampleConfig(target_frame_rule="best")


def test_key_segment_and_context_frames():
    visible = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0, 0] * 2, bool)  # T = 20
    s, e = key_segment_around(4, visible, 0.5)
    assert s <= 4 <= e and (s, e) == (1, 7)
    s, e = key_segment_around(4, visible, 0.2)  # at most 4 frames
    assert e - s + 1 == 4 and s <= 4 <= e
    key, ref = context_frame_indices(20, (1, 7), 4, num_key=3, num_reference=4)
    assert 4 not in key and all(1 <= k <= 7 for k in key) and len(key) == 3
    assert len(ref) == 4 and all(r < 1 or r > 7 for r in ref)


def test_prompt_layout_matches_the_reasoner():
    from videoseg_r1.reasoning.reasoner import Reasoner

    prompt = build_prompt("the cat", 840, 840, [0.0, 0.5, 1.0])
    text = prompt[0]["content"][-1]["text"]
    expected = Reasoner.build_messages(None, text, 3, False, [0.0, 0.5, 1.0])
    got = [{k: v for k, v in part.items() if v is not None} for part in prompt[0]["content"]]
    assert got == expected[0]["content"]
    assert '"the cat"' in text and "840x840" in text


def test_synthetic_dataset_columns_and_consistency(synthetic_dataset):
    ds, reader, report = synthetic_dataset
    assert report.samples == len(ds) > 0
    row = ds[0]
    for col in ("prompt", "images", "solution", "gt_mask_rle", "frame_size", "difficulty"):
        assert col in row
    expr = next(e for e in reader.expressions() if e.video == row["video"] and e.exp_id == row["exp_id"])
    assert row["difficulty_source"] == "synthetic" and row["difficulty"] == pytest.approx(expr.extra["difficulty"])
    items = json.loads(row["solution"])
    assert len(items) <= len(expr.obj_ids) and all(set(i) == {"bbox_2d", "point_2d"} for i in items)
    images = row["images"]
    assert images[-1].size == (56, 56) and len(images) == len(row["frame_indices"])
    assert sum(p["type"] == "image" for p in row["prompt"][0]["content"]) == len(images)
    assert row["frame_indices"][-1] == row["target_frame_idx"]
    assert row["frame_indices"][:-1] == sorted(row["frame_indices"][:-1])


def test_ground_truth_answer_earns_the_maximum_reward(synthetic_dataset):
    ds, _, _ = synthetic_dataset
    rows = ds.select(range(min(6, len(ds))))
    texts = [sft_answer_text(r["query"], r["solution"], r["neg_points"]) for r in rows]
    cols = {k: rows[k] for k in ("solution", "gt_mask_rle", "frame_size")}
    for name, fn in REWARD_FUNCS.items():
        expected = {"answer_format": 2.0, "accuracy": 3.0}.get(name, 1.0)
        assert fn(texts, **cols) == [expected] * len(texts), name
    totals = total_reward(texts, difficulty=rows["difficulty"], **cols)
    assert totals == [8.0] * len(texts)  # the one-sentence think stays within every budget


def test_difficulty_file_overrides(synthetic_root, tmp_path):
    from videoseg_r1.data.registry import get_reader
    from videoseg_r1.training.difficulty import DifficultyCache, DifficultyRecord, sample_key

    reader = get_reader("synthetic", synthetic_root, "train")
    expr = next(iter(reader.expressions()))
    cache = DifficultyCache(tmp_path / "d.json")
    cache.put(sample_key("synthetic", expr.video, expr.exp_id), DifficultyRecord(9.5, "mllm"))
    cache.save()
    ds = build_dataset(reader, "synthetic", SampleConfig(**SMALL, max_samples=1,
                                                         difficulty_file=str(tmp_path / "d.json")))
    assert ds[0]["difficulty"] == pytest.approx(9.5) and ds[0]["difficulty_source"] == "cache:mllm"
    with pytest.raises(FileNotFoundError):
        build_dataset(reader, "synthetic", SampleConfig(**SMALL, difficulty_file=str(tmp_path / "none.json")))


def test_htfs_samples_are_the_sampler_prompts_and_their_answers_parse_back(synthetic_root):
    from videoseg_r1.data.registry import get_reader
    from videoseg_r1.config import SamplerConfig
    from videoseg_r1.reasoning.parsing import parse_position
    from videoseg_r1.reasoning.reasoner import Reasoner, ScriptedReasoner
    from videoseg_r1.reasoning.sampler import FrameSampler, HTFSAnswer, uniform_indices
    from videoseg_r1.training.sft import to_sft_dataset

    reader = get_reader("synthetic", synthetic_root, "train")
    cfg = SampleConfig(**SMALL, tasks=("reasoning", "interval", "position"), htfs_frame_size=28,
                       htfs_max_frames_shown=4)
    ds = build_dataset(reader, "synthetic", cfg)
    exprs = {(str(e.video), str(e.exp_id)): e for e in reader.expressions()}
    tasks = {}
    for row in ds:
        tasks.setdefault((row["video"], row["exp_id"]), []).append(row["task"])
        if row["task"] == "reasoning":
            assert row["answer"] == "" and json.loads(row["solution"])
            continue
        expr = exprs[(row["video"], row["exp_id"])]
        video = reader.open_video(expr.video)
        ts = video.timestamps()
        s, e = expr.extra["key_interval"]
        shown = row["frame_indices"]
        a, b = shown[0], shown[-1]
        assert shown == uniform_indices(a, b, 4) and all(im.size == (28, 28) for im in row["images"])
        # the prompt is what HTFS sends on that segment with as_video=False (clip time axis)
        sampler = FrameSampler(ScriptedReasoner(lambda call: ["x"]),
                               SamplerConfig(max_frames_shown=4, frame_size=28, as_video=False))
        sent, start, _, _ = sampler._ask(video, row["task"], expr.text, (a, b), 1, 8, np.asarray(ts))
        call = sampler.reasoner.calls[-1]
        assert sent == shown and call.timestamps_s[0] == 0.0
        expected = Reasoner.build_messages(None, call.text, call.num_frames, False, call.timestamps_s)
        got = [{"role": m["role"], "content": [{k: v for k, v in c.items() if v is not None} for c in m["content"]]}
               for m in row["prompt"]]
        assert got == expected
        if row["task"] == "interval":  # and HTFS reads the answer as the key segment
            assert a <= s and e <= b
            span, error = FrameSampler._interval_span(row["answer"], HTFSAnswer("", 0.0, 0), (a, b), shown, start,
                                                      np.asarray(ts))
            assert error is None and tuple(span) == (s, e)
        else:
            assert (a, b) == (s, e)
            p = parse_position(row["answer"]).value_norm
            assert s + int(np.floor((e - s + 1) * p)) == row["target_frame_idx"]
    assert all(t[0] == "reasoning" and t.count("position") == 1 and 1 <= t.count("interval") <= 2
               for t in tasks.values())
    sft = to_sft_dataset(ds)
    answers = [r["completion"][0]["content"] for r in sft]
    assert sum(a.startswith("<think>") for a in answers) == len(tasks)  # reasoning samples only
    assert all(a.startswith("<think>") or a.startswith("<answer>") for a in answers)


def test_parallel_build_equals_serial(synthetic_root):
    from videoseg_r1.data.registry import get_reader

    reader = get_reader("synthetic", synthetic_root, "train")
    cfg = SampleConfig(**SMALL, tasks=("reasoning", "interval"), htfs_frame_size=28, htfs_max_frames_shown=4)
    serial, parallel = BuildReport(), BuildReport()
    one = build_dataset(reader, "synthetic", cfg, serial)
    two = build_dataset(reader, "synthetic", cfg, parallel, workers=2)
    assert serial.samples == parallel.samples == len(one) == len(two) > 0
    for r1, r2 in zip(one, two):
        assert {k: v for k, v in r1.items() if k != "images"} == {k: v for k, v in r2.items() if k != "images"}
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(r1["images"], r2["images"]))
