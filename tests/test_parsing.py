"""THE parser (videoseg_r1.reasoning.parsing): a table of well-formed, malformed and adversarial outputs."""

import math

import pytest

from videoseg_r1.reasoning.parsing import (
    CoordinateMap,
    clip_box,
    load_answer_json,
    load_answer_json_strict,
    parse_answer,
    parse_box,
    parse_interval,
    parse_point,
    parse_position,
    split_think_answer,
)

GOOD = '[{"bbox_2d": [10, 20, 110, 220], "point_2d": [50, 60], "neg_point_2d": [5, 5]}]'

# (text, expected [(box, point, neg)] of usable objects, or None when nothing usable)
ANSWERS = [
    (f"<think>ok</think><answer>{GOOD}</answer>", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    (f"<think>ok</think>\n\n<answer>\n  {GOOD}\n</answer>\n", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    (f"<answer>```json\n{GOOD}\n```</answer>", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    (f"<answer>```\n{GOOD}```</answer>", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    ("<answer>[{'bbox_2d': [10, 20, 110, 220], 'point_2d': [50, 60]}]</answer>", [((10, 20, 110, 220), (50, 60), None)]),
    ('<answer>{"bbox_2d": [10, 20, 110, 220], "point_2d": [50, 60]}</answer>', [((10, 20, 110, 220), (50, 60), None)]),
    (f"<answer>{GOOD}</answer> I hope this helps! [1, 2]", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    (f"<think>the box [1,2,3] is wrong</think><answer>{GOOD}</answer>", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    (f"Sure. {GOOD} done", [((10, 20, 110, 220), (50, 60), (5, 5))]),  # no tags at all
    (f"<think>unterminated <answer>{GOOD}", [((10, 20, 110, 220), (50, 60), (5, 5))]),
    ('<answer>[{"bbox_2d": [110, 220, 10, 20], "point_2d": [50, 60]}]</answer>', [((10, 20, 110, 220), (50, 60), None)]),
    ('<answer>[{"bbox_2d": [-5, -5, 900, 1000], "point_2d": [-3, 2000]}]</answer>', [((0, 0, 839, 839), (0, 839), None)]),
    ('<answer>[{"bbox_2d": [10.5, 20.25, 30, 40], "point_2d": [15.5, 25]},]</answer>', [((10.5, 20.25, 30, 40), (15.5, 25), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}, {"bbox_2d": [5, 6, 7, 8], "point_2d": [6, 7]}]</answer>',
     [((1, 2, 3, 4), (2, 3), None), ((5, 6, 7, 8), (6, 7), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>', [((1, 2, 3, 4), None, None)]),  # box only is usable
    ('<answer>[{"point_2d": [2, 3]}]</answer>', [(None, (2, 3), None)]),  # point only is usable
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3], "neg_point_2d": null}]</answer>', [((1, 2, 3, 4), (2, 3), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3], "neg_point_2d": [1]}]</answer>', [((1, 2, 3, 4), (2, 3), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, "4"], "point_2d": [2, 3]}]</answer>', [(None, (2, 3), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, NaN], "point_2d": [2, 3]}]</answer>', [(None, (2, 3), None)]),
    ('<answer>[{"bbox_2d": [1, 2, 3, Infinity], "point_2d": [2, Infinity]}]</answer>', None),
    ('<answer>[{"bbox_2d": [true, 2, 3, 4], "point_2d": [false, 3]}]</answer>', None),
    ('<answer>[{"bbox_2d": [1, 2, 3], "point_2d": [2, 3, 4]}]</answer>', None),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4, 5], "point_2d": "2, 3"}]</answer>', None),
    ('<answer>[{"bbox_2d": [[1, 2], [3, 4]], "point_2d": [[2, 3]]}]</answer>', None),
    ('<answer>[{"bbox_2d": [900, 900, 1000, 1000], "point_2d": null}]</answer>', None),  # box outside frame
    ('<answer>[{"box": [1, 2, 3, 4], "point": [2, 3]}]</answer>', None),  # wrong keys
    ('<answer>[1, 2, 3, 4]</answer>', None),
    ('<answer>["bbox_2d"]</answer>', None),
    ("<answer>[]</answer>", None),
    ("<answer>none</answer>", None),
    ("<answer></answer>", None),
    ("", None),
    ("   \n\t ", None),
    ("<think>I cannot see it</think>", None),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]</answer>', None),  # truncated JSON
    ("<answer>" + "[" * 5000 + "</answer>", None),
    ("<answer>" + "{" * 3000 + "}" * 3000 + "</answer>", None),
    ('<answer>[{"bbox_2d": [1e400, 2, 3, 4], "point_2d": [2, 3]}]</answer>', [(None, (2, 3), None)]),
    ("<answer>[{'bbox_2d': (1, 2, 3, 4), 'point_2d': (2, 3)}]</answer>", [((1, 2, 3, 4), (2, 3), None)]),
    ("<answer>__import__('os').system('echo hi')</answer>", None),  # never evaluated
    ("<answer>[{'bbox_2d': [1, 2, 3, 4], 'point_2d': [2, 3], 'x': __import__('os')}]</answer>", None),
    ("\u00a0<answer>\u3000" + GOOD + "</answer>", [((10, 20, 110, 220), (50, 60), (5, 5))]),
]


def _as_tuple(v):
    return None if v is None else tuple(float(x) for x in v)


@pytest.mark.parametrize("text,expected", ANSWERS)
def test_parse_answer_table(text, expected):
    ans = parse_answer(text)
    if expected is None:
        assert not ans.ok
        assert not ans.usable_objects
        return
    assert ans.ok, ans.error
    got = [(o.box_xyxy, o.point_xy, o.neg_point_xy) for o in ans.usable_objects]
    assert got == [tuple(_as_tuple(v) for v in exp) for exp in expected]


@pytest.mark.parametrize("bad", [None, 42, 3.5, b"bytes", ["list"], {"a": 1}, object()])
def test_never_raises_on_non_strings(bad):
    assert not parse_answer(bad).ok
    assert not parse_interval(bad).ok
    assert not parse_position(bad).ok
    assert split_think_answer(bad).think is None


def test_errors_are_reported_per_object():
    ans = parse_answer('<answer>[{"bbox_2d": [1, 2, 3], "point_2d": [2, 3]}, 7]</answer>')
    assert ans.json_ok and ans.ok
    assert "bbox_2d has 3 values" in ans.objects[0].errors[0]
    assert "not an object" in ans.objects[1].errors[0]
    empty = parse_answer("<answer>[]</answer>")
    assert empty.json_ok and not empty.ok and empty.error is None and empty.objects == ()
    bad = parse_answer("<answer>nope</answer>")
    assert not bad.json_ok and "no JSON" in bad.error


def test_max_objects_and_no_clipping():
    many = "[" + ",".join(['{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}'] * 200) + "]"
    assert len(parse_answer(many, max_objects=120).objects) == 120
    raw = parse_answer('[{"bbox_2d": [900, 5, 1000, 1], "point_2d": [2000, -1]}]', frame_size_wh=None)
    assert raw.objects[0].box_xyxy == (900.0, 1.0, 1000.0, 5.0)
    assert raw.objects[0].point_xy == (2000.0, -1.0)


def test_custom_frame_size_clipping():
    ans = parse_answer('[{"bbox_2d": [-10, 5, 700, 300], "point_2d": [650, 350]}]', frame_size_wh=(640, 320))
    assert ans.objects[0].box_xyxy == (0.0, 5.0, 639.0, 300.0)
    assert ans.objects[0].point_xy == (639.0, 319.0)


@pytest.mark.parametrize("text,strict", [
    ("<think>a</think><answer>[]</answer>", True),
    ("  <think>a</think>\n<answer>[]</answer>\n", True),
    ("<think>a</think> <answer>[]</answer> trailing", False),
    ("lead <think>a</think><answer>[]</answer>", False),
    ("<answer>[]</answer>", False),
    ("<think>a</think><answer>[]</answer><answer>[]</answer>", False),
    ("<think><think>a</think></think><answer>[]</answer>", False),
    ("<answer>[]</answer><think>a</think>", False),
])
def test_strict_format(text, strict):
    assert split_think_answer(text).strict_format is strict


def test_split_think_answer_contents():
    parts = split_think_answer("<think>\n reason \n</think><answer> [1] </answer>")
    assert parts.think == "reason" and parts.answer == "[1]" and parts.has_think and parts.has_answer
    quoted = split_think_answer("<think>I will write <answer>x</answer> later</think><answer>[2]</answer>")
    assert quoted.answer == "[2]"


def test_json_loaders():
    assert load_answer_json("<answer>{'a': [1, 2]}</answer>") == ({"a": [1, 2]}, None)
    assert load_answer_json_strict("[1, 2]") == ([1, 2], None)
    value, err = load_answer_json_strict("[{'a': 1}]")
    assert value is None and "invalid JSON" in err


def test_box_and_point_helpers():
    assert parse_box([5, 6, 1, 2], (10, 10)) == ((1.0, 2.0, 5.0, 6.0), None)
    assert parse_box([20, 20, 30, 30], (10, 10))[0] is None
    assert parse_point([3, 4]) == ((3.0, 4.0), None)
    assert parse_point([3, 4, 5])[0] is None
    assert clip_box((-1, -1, 5, 5), (4, 4)) == (0.0, 0.0, 3.0, 3.0)


# ------------------------------------------------------------------ intervals

INTERVALS = [
    ("2.5-7s", (2.5, 7.0, "seconds")),
    ("2.5 - 7 s", (2.5, 7.0, "seconds")),
    ("from 3 to 8 seconds", (3.0, 8.0, "seconds")),
    ("The dog is seen best from 3.0s to 8.5s.", (3.0, 8.5, "seconds")),
    ("between 3s and 8s", (3.0, 8.0, "seconds")),
    ("[12, 40]", (12.0, 40.0, "seconds")),
    ("(12.5, 40)", (12.5, 40.0, "seconds")),
    ("frames 10 to 20", (10.0, 20.0, "frames")),
    ("frame 10 - frame 20", (10.0, 20.0, "frames")),
    ("from frame 10 to 20", (10.0, 20.0, "frames")),
    ("00:03-00:08", (3.0, 8.0, "seconds")),
    ("1:02.5 to 1:10", (62.5, 70.0, "seconds")),
    ("01:00:01 - 01:00:03", (3601.0, 3603.0, "seconds")),
    ('{"start": 3, "end": 8}', (3.0, 8.0, "seconds")),
    ("start time: 3.5 s, end time: 6 s", (3.5, 6.0, "seconds")),
    ("<answer>[8, 3]</answer>", (3.0, 8.0, "seconds")),  # reversed -> swapped
    ("<think>maybe 1 to 2</think><answer>5.0 - 9.5</answer>", (5.0, 9.5, "seconds")),
    ("<answer>```json\n[4, 6]\n```</answer>", (4.0, 6.0, "seconds")),
    ("3–8 seconds", (3.0, 8.0, "seconds")),
    ("0 ~ 4", (0.0, 4.0, "seconds")),
    ("<answer>[3.5, 8.0]</answer> because the dog jumps at 10", (3.5, 8.0, "seconds")),
]


@pytest.mark.parametrize("text,expected", INTERVALS)
def test_parse_interval_table(text, expected):
    got = parse_interval(text)
    assert got.ok, got.error
    assert (got.start, got.end, got.unit) == expected


@pytest.mark.parametrize("text", ["", "nothing here", "[-1, 5]", "at 5 seconds", "<answer>soon</answer>",
                                  "<answer>[nan, 3]</answer>", "[", "<think>3 to 8</think>"])
def test_parse_interval_invalid(text):
    got = parse_interval(text)
    if text == "<think>3 to 8</think>":  # with no answer outside the think block the whole text is used
        assert got.ok
        return
    assert not got.ok and got.error


def test_interval_default_unit_and_frame_spans():
    assert parse_interval("[10, 20]", default_unit="frames").unit == "frames"
    with pytest.raises(ValueError):
        parse_interval("[1, 2]", default_unit="minutes")
    assert parse_interval("2.5-7s").to_frame_span(fps=10, num_frames=300) == (25, 70)
    assert parse_interval("20-40s").to_frame_span(fps=10, num_frames=300) == (200, 299)  # clamped
    assert parse_interval("40-50s").to_frame_span(fps=10, num_frames=300) is None  # outside
    ts = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert parse_interval("0.6 - 1.4 s").to_frame_span(timestamps_s=ts, num_frames=5) == (1, 3)
    assert parse_interval("frames 3 to 9").to_frame_span(num_frames=5) == (3, 4)
    assert parse_interval("[1, 2]").to_frame_span() is None  # seconds without fps or timestamps
    assert parse_interval("nothing").to_frame_span(fps=1) is None


# ------------------------------------------------------------------ positions

POSITIONS = [
    ("0.35", 0.35), ("35%", 0.35), ("35 %", 0.35), ("40 percent", 0.4), ("<answer>0</answer>", 0.0),
    ("<answer>1</answer>", 1.0), ("<answer>1.0</answer>", 1.0), ('{"position": 0.4}', 0.4),
    ("about .5 of the clip", 0.5), ("<think>maybe 0.9</think><answer>0.2</answer>", 0.2),
    ("<answer>100%</answer>", 1.0), ("position: 0.75.", 0.75),
]


@pytest.mark.parametrize("text,value", POSITIONS)
def test_parse_position_table(text, value):
    got = parse_position(text)
    assert got.ok, got.error
    assert math.isclose(got.value_norm, value)


@pytest.mark.parametrize("text", ["1.5", "-0.2", "150%", "position 3", "", "none", "<answer>nan</answer>"])
def test_parse_position_invalid(text):
    got = parse_position(text)
    assert not got.ok and got.error


# ------------------------------------------------------------------ coordinate mapping


def test_coordinate_map_round_trip():
    cmap = CoordinateMap(model_wh=(840, 840), original_wh=(1920, 1080))
    box = cmap.box_to_original((420, 420, 840, 840))
    assert box == (960.0, 540.0, 1919.0, 1079.0)  # clipped to the original frame
    assert cmap.point_to_model((960.0, 540.0)) == (420.0, 420.0)
    for p in [(0.0, 0.0), (100.0, 700.0), (839.0, 1.0)]:
        back = cmap.point_to_model(cmap.point_to_original(p))
        assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(back, p))
    assert cmap.box_to_model((0, 0, 1920, 1080)) == (0.0, 0.0, 839.0, 839.0)


def test_parsed_object_to_original():
    ans = parse_answer(f"<answer>{GOOD}</answer>")
    obj = ans.objects[0].to_original(CoordinateMap((840, 840), (420, 1680)))
    assert obj.box_xyxy == (5.0, 40.0, 55.0, 440.0)
    assert obj.point_xy == (25.0, 120.0) and obj.neg_point_xy == (2.5, 10.0)
