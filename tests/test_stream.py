"""The on-the-fly training stream, its evaluator and the number tokens (CPU, no model training)."""

import json

import numpy as np
import pytest

from videoseg_r1.training.samples import SampleConfig
from videoseg_r1.training.stream import SampleStream, StreamConfig, stream_dataset

SIZES = dict(model_input_size=112, context_frame_size=56, num_key_frames=1, num_reference_frames=1,
             htfs_frame_size=56, htfs_max_frames_shown=4)


def _config(**kw):
    base = dict(tasks={"refer": 1.0, "list": 1.0, "interval": 1.0, "position": 1.0, "reasoning": 1.0},
                frames=8, size_wh=(160, 120), samples_per_video=4, num_videos=50, samples=SampleConfig(**SIZES))
    return StreamConfig(**{**base, **kw})


# ---------------------------------------------------------------- number tokens


@pytest.mark.parametrize("numbers, per_coordinate", [("integers", 1), ("digits", None)])
def test_number_tokens_round_trip_through_the_parser(numbers, per_coordinate):
    from videoseg_r1.reasoning.parsing import parse_answer
    from videoseg_r1.reasoning.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer(numbers)
    answer = '<think>x</think><answer>[{"bbox_2d": [7, 127, 163, 223], "point_2d": [64, 190]}]</answer>'
    ids = tok.encode(answer, add_special_tokens=False)
    assert tok.decode(ids) == answer
    parsed = parse_answer(tok.decode(ids), frame_size_wh=(224, 224))
    assert parsed.objects[0].box_xyxy == (7.0, 127.0, 163.0, 223.0) and parsed.objects[0].point_xy == (64.0, 190.0)
    pieces = [p.strip("Ġ") for p in tok.convert_ids_to_tokens(tok.encode("[7, 127, 163, 223]", add_special_tokens=False))]
    digits = [p for p in pieces if p.isdigit()]
    if per_coordinate == 1:  # one token per coordinate ...
        assert digits == ["7", "127", "163", "223"]
    else:  # ... or one per digit, never a merge of digits
        assert digits == list("7127163223")
    assert "1000" not in tok.get_vocab() or numbers == "integers"


# ---------------------------------------------------------------- the stream


def test_stream_is_a_pure_function_of_seed_and_index():
    a, b = SampleStream(_config()), SampleStream(_config())
    for i in (5, 0, 17, 5):  # any order, any instance
        ra, rb = a[i], b[i]
        assert ra["task"] == rb["task"] and ra["completion"] == rb["completion"]
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(ra["images"], rb["images"]))
    other = SampleStream(_config(seed=1))
    assert [other[i]["completion"] for i in range(8)] != [a[i]["completion"] for i in range(8)]


def test_stream_rows_match_their_ground_truth():
    """Every task appears; refer answers are the targets' GT boxes; list answers every visible shape."""
    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.training.stream import InMemorySyntheticReader, _frame_for, _video_seed
    from videoseg_r1.training.samples import mask_box_xyxy, resize_mask

    cfg = _config()
    stream = SampleStream(cfg)
    rows = [stream[i] for i in range(40)]
    assert {r["task"] for r in rows} == {"refer", "list", "interval", "position", "reasoning"}
    for r in rows:
        assert r["prompt"][0]["role"] == "user" and r["completion"][0]["role"] == "assistant"
        slots = sum(1 for c in r["prompt"][0]["content"] if c["type"] == "image")
        assert slots == len(r["images"]) >= 1
    refer = [(i, r) for i, r in enumerate(rows) if r["task"] == "refer"]
    assert refer
    for i, r in refer:
        video = generate_video(_video_seed(cfg, i // cfg.samples_per_video), cfg.split, i // cfg.samples_per_video,
                               frames=cfg.frames, size=cfg.size_wh)
        reader = InMemorySyntheticReader([video])
        expr = next(e for e in reader.expressions() if e.text == r["query"] and str(e.exp_id) == r["exp_id"])
        t = _frame_for(expr, video.num_frames)
        assert t == r["target_frame_idx"]
        want = sorted(mask_box_xyxy(resize_mask(video.label_maps[t] == k, (112, 112))) for k in expr.obj_ids)
        got = sorted(item["bbox_2d"] for item in json.loads(r["completion"][0]["content"]))
        assert got == want
        assert np.asarray(r["images"][0]).shape == (112, 112, 3)
    lists = [r for r in rows if r["task"] == "list"]
    for r in lists:
        items = json.loads(r["completion"][0]["content"])
        assert [it["bbox_2d"][0] for it in items] == sorted(it["bbox_2d"][0] for it in items)  # left to right
        assert all(len(it["label"].split()) == 2 for it in items)


def test_task_probabilities_and_dataset_view():
    only = SampleStream(_config(tasks={"refer": 1.0}))
    assert {only[i]["task"] for i in range(12)} == {"refer"}
    with pytest.raises(ValueError):
        _config(tasks={"nonsense": 1.0})
    ds = stream_dataset(_config(tasks={"refer": 1.0, "list": 1.0}))
    assert len(ds) == 50 * 4 and ds.stream_config.samples_per_video == 4
    row = ds[3]
    assert set(row) == {"prompt", "completion", "images", "task"}
    batch = ds[0:4]
    assert len(batch["task"]) == 4


def test_cropped_transforms_equal_the_whole_frame():
    """mask_centre_point / negative_point_target work on crops; the answers equal the full-frame ones."""
    import cv2
    from scipy.ndimage import distance_transform_cdt, distance_transform_edt

    from videoseg_r1.training.samples import mask_centre_point, negative_point_target

    def centre_full(mask):
        dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        ys, xs = np.nonzero(dist >= dist.max() - 1e-9)
        k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
        return [int(xs[k]), int(ys[k])]

    def negative_full(mask, near, lo, hi):
        dist = distance_transform_cdt(~mask, metric="taxicab")
        ring = (dist >= lo) & (dist <= hi)
        if not ring.any():
            ring = dist > 0
        ys, xs = np.nonzero(ring)
        k = int(np.argmin((xs - near[0]) ** 2 + (ys - near[1]) ** 2))
        return [int(xs[k]), int(ys[k])]

    rng = np.random.default_rng(0)
    for i in range(150):
        m = np.zeros((60, 80), np.uint8)
        for _ in range(rng.integers(1, 4)):
            cv2.circle(m, (int(rng.integers(-5, 85)), int(rng.integers(-5, 65))), int(rng.integers(1, 25)), 1, -1)
        if i % 10 == 0:
            m[:] = 1
            m[rng.integers(0, 60), rng.integers(0, 80)] = 0
        m = m.astype(bool)
        near = (float(rng.uniform(0, 80)), float(rng.uniform(0, 60)))
        if not m.any():
            assert mask_centre_point(m) is None and negative_point_target(m, near) is None
            continue
        assert mask_centre_point(m) == centre_full(m)
        assert negative_point_target(m, near) == negative_full(m, near, 5, 20)
        assert negative_point_target(m, near, 2, 6) == negative_full(m, near, 2, 6)


# ---------------------------------------------------------------- scoring held-out answers


def test_scorers_on_right_and_wrong_answers():
    from videoseg_r1.training.stream_eval import SCORERS

    stream = SampleStream(_config())
    rows = [stream[i] for i in range(40)]
    seen = set()
    for r in rows:
        right = r["completion"][0]["content"]
        scores = SCORERS[r["task"]](right, r)
        seen.add(r["task"])
        if r["task"] in ("refer", "reasoning"):
            assert scores["iou50"] == scores["point"] == scores["precision50"] == 1.0
            assert scores["accuracy"] == pytest.approx(3.0) and scores["parsed"] == 1.0
            assert SCORERS[r["task"]]("<answer>nothing</answer>", r)["iou50"] == 0.0
        elif r["task"] == "list":
            assert scores["iou50"] == scores["label"] == 1.0
        elif r["task"] == "interval":
            assert scores["tiou"] == pytest.approx(1.0)
            assert SCORERS["interval"]("frames 1 to 2", r)["parsed"] == 0.0
        else:
            assert scores["abs_err"] == pytest.approx(0.0) and scores["parsed"] == 1.0
    assert seen == {"refer", "list", "interval", "position", "reasoning"}
    r = next(r for r in rows if r["task"] == "refer")
    half = json.loads(r["solution"])
    box = half[0]["bbox_2d"]
    w = box[2] - box[0] + 1
    shifted = [{"bbox_2d": [box[0] + w, box[1], box[2] + w, box[3]], "point_2d": half[0]["point_2d"]}]
    assert SCORERS["refer"](json.dumps(shifted), r)["iou50"] == 0.0  # no overlap


def test_evaluate_stream_with_a_tiny_model():
    from videoseg_r1.reasoning.tiny import build_tiny_reasoner
    from videoseg_r1.training.stream_eval import evaluate_stream

    model, processor = build_tiny_reasoner(numbers="integers")
    out = evaluate_stream(model, processor, _config(tasks={"refer": 1.0, "position": 1.0}), num_samples=6,
                          batch_size=3, max_new_tokens=4, return_rows=True)
    assert sum(v for k, v in out.items() if k.endswith("/n")) == 6 and len(out["rows"]) == 6
    assert all(0.0 <= out[k] <= 3.0 for k in out if k.startswith("refer/") and not k.endswith("/n"))
