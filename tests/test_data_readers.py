"""Fixture datasets in every benchmark's published layout (tiny, written here) and the readers over them.

The ``make_*`` builders are also used by the evaluator tests (tests/test_eval_evaluate.py).
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from videoseg_r1.data.base import DatasetError, DataRootError, Expression
from videoseg_r1.data.registry import BENCHMARKS, get_reader
from videoseg_r1.masks import rle_encode, write_palette_png

H, W, T = 12, 16, 3


def _jpegs(folder: Path, frames, h=H, w=W):
    folder.mkdir(parents=True, exist_ok=True)
    for fr in frames:
        cv2.imwrite(str(folder / f"{fr}.jpg"), np.full((h, w, 3), 80, np.uint8))


def box(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# Two objects in "v1": a (frames 0, 1; absent in 2) and b (all frames); "v2" has one object c.
TRACKS = {
    "v1": {1: [box(1, 5, 1, 5), box(2, 6, 1, 5), None], 2: [box(6, 10, 8, 14)] * 3},
    "v2": {1: [box(3, 9, 3, 9), box(3, 9, 4, 10), box(3, 9, 5, 11)]},
}
FRAMES = [f"{t:05d}" for t in range(T)]


def make_revos(root: Path, split="valid"):
    """ReVOS: anno ids 10 (v1/a), 11 (v1/b), 20 (v2/c); expressions of types 0, 1, 2 and a multi-object one."""
    root.mkdir(parents=True, exist_ok=True)
    mask_dict = {"10": [rle_encode(m) if m is not None else None for m in TRACKS["v1"][1]],
                 "11": [rle_encode(m) for m in TRACKS["v1"][2]],
                 "20": [rle_encode(m) for m in TRACKS["v2"][1]]}
    meta = {"videos": {
        "v1": {"frames": FRAMES, "height": H, "width": W, "expressions": {
            "0": {"exp": "the small square", "obj_id": [1], "anno_id": [10], "type_id": 0},
            "1": {"exp": "what moves right", "obj_id": [2], "anno_id": [11], "type_id": 1},
            "2": {"exp": "both squares", "obj_id": [1, 2], "anno_id": [10, 11], "type_id": 1},
            "3": {"exp": "nothing", "obj_id": [1], "anno_id": [10], "type_id": 2}}},
        "v2": {"frames": FRAMES, "height": H, "width": W, "expressions": {
            "0": {"exp": "the drifting square", "obj_id": [1], "anno_id": [20], "type_id": 0}}}}}
    fore = {}
    for v, tracks in TRACKS.items():
        u = [np.zeros((H, W), bool) for _ in FRAMES]
        for tr in tracks.values():
            for t, m in enumerate(tr):
                if m is not None:
                    u[t] |= m
        fore[v] = {"masks_rle": [rle_encode(m) for m in u]}
        _jpegs(root / "JPEGImages" / v, FRAMES)
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    (root / "mask_dict_foreground.json").write_text(json.dumps(fore))
    (root / f"meta_expressions_{split}_.json").write_text(json.dumps(meta))
    return root


def make_mevis(root: Path):
    """MeViS valid_u (with masks) and valid (no masks) in per-split folders."""
    for split in ("valid_u", "valid"):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        exps = {"0": {"exp": "moving square", "obj_id": [0], "anno_id": [5]},
                "1": {"exp": "both", "obj_id": [0, 1], "anno_id": [5, 6]}}
        if split == "valid":
            exps = {k: {"exp": e["exp"]} for k, e in exps.items()}
        (d / "meta_expressions.json").write_text(json.dumps({"videos": {"m1": {"frames": FRAMES, "expressions": exps}}}))
        _jpegs(d / "JPEGImages" / "m1", FRAMES)
        if split == "valid_u":
            md = {"5": [rle_encode(m) if m is not None else None for m in TRACKS["v1"][1]],
                  "6": [rle_encode(m) for m in TRACKS["v1"][2]]}
            (d / "mask_dict.json").write_text(json.dumps(md))
    return root


def make_ytvos(root: Path, davis=False):
    """Ref-YouTube-VOS (train with palette annotations, valid + test metas) or Ref-DAVIS17 (valid annotated,
    4 expressions per object)."""
    ann_split = "valid" if davis else "train"
    splits = ("valid",) if davis else ("train", "valid", "test")
    for split in splits:
        videos = {}
        for v, tracks in TRACKS.items():
            if davis:
                exps = {}
                for k, obj in enumerate(sorted(tracks)):
                    for a in range(4):
                        exps[str(4 * k + a)] = {"exp": f"object {obj} by annotator {a}", "obj_id": str(obj)}
            else:
                exps = {str(i): {"exp": f"object {obj}", "obj_id": str(obj)} for i, obj in enumerate(sorted(tracks))}
            videos[v] = {"frames": FRAMES, "expressions": exps}
        if split == "test":
            videos = {"v2": videos["v2"]}  # valid meta also lists test videos; v2 is one of them
        d = root / "meta_expressions" / split
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
        if split != "test":
            for v in TRACKS:
                _jpegs(root / split / "JPEGImages" / v, FRAMES)
    for v, tracks in TRACKS.items():
        for t, fr in enumerate(FRAMES):
            ids = np.zeros((H, W), np.uint8)
            for obj, tr in tracks.items():
                if tr[t] is not None:
                    ids[tr[t]] = obj
            write_palette_png(root / ann_split / "Annotations" / v / f"{fr}.png", ids)
    return root


def make_reasonvos(root: Path, expressions_as_list=True):
    videos = {}
    for v, tracks in TRACKS.items():
        exps = [{"obj_id": obj, "exp_id": str(i), "exp_text": f"which one is {obj}?", "is_sent": True}
                for i, obj in enumerate(sorted(tracks))]
        videos[v] = {"source": "MeViS", "frames": FRAMES,
                     "expressions": exps if expressions_as_list else {e["exp_id"]: e for e in exps}}
        _jpegs(root / "JPEGImages" / v, FRAMES)
        for obj, tr in tracks.items():
            d = root / "Annotations" / f"MeViS_{v}_{obj}"
            d.mkdir(parents=True, exist_ok=True)
            for fr, m in zip(FRAMES, tr):
                cv2.imwrite(str(d / f"{fr}.png"), (np.zeros((H, W), np.uint8) if m is None else m.astype(np.uint8) * 255))
    (root / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    return root


def make_reasonseg(root: Path, split="val"):
    """Two images: img1 with a target square (and an ignore region), img2 with a target triangle."""
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    for name in ("img1", "img2"):
        cv2.imwrite(str(d / f"{name}.jpg"), np.full((20, 30, 3), 90, np.uint8))
    shapes1 = [{"label": "target", "points": [[2, 2], [9, 2], [9, 9], [2, 9]], "shape_type": "polygon"},
               {"label": "ignore", "points": [[20, 10], [25, 10], [25, 15], [20, 15]], "shape_type": "polygon"},
               {"label": "flag", "points": [[0, 0], [29, 0], [29, 19]], "shape_type": "polygon"}]
    shapes2 = [{"label": "target", "points": [[5, 5], [15, 5], [5, 15]], "shape_type": "polygon"}]
    (d / "img1.json").write_text(json.dumps({"text": ["the thing you sit on"], "is_sentence": True, "shapes": shapes1}))
    (d / "img2.json").write_text(json.dumps({"text": ["a sharp shape", "alt"], "is_sentence": False, "shapes": shapes2}))
    return root


# ------------------------------------------------------------------ tests


def test_revos_reader(tmp_path):
    r = get_reader("revos", make_revos(tmp_path / "revos"), "valid")
    assert r.videos() == ["v1", "v2"] and r.has_ground_truth and r.has_robustness
    exprs = list(r.expressions())
    assert [e.key for e in exprs] == ["v1/0", "v1/1", "v1/2", "v1/3", "v2/0"]
    e = exprs[2]
    assert isinstance(e, Expression) and e.obj_ids == [1, 2] and e.anno_ids == [10, 11] and e.type_id == 1
    assert [x.key for x in r.expressions("v2")] == ["v2/0"]
    assert r.frame_names("v1") == FRAMES and r.frame_size("v1") == (H, W)
    objs = r.object_masks(e)
    assert set(objs) == {1, 2} and objs[1].shape == (T, H, W) and not objs[1][2].any()
    gt = r.gt_masks(e)
    assert (gt[0] == (TRACKS["v1"][1][0] | TRACKS["v1"][2][0])).all()
    assert len(r.instance_masks(e)) == 2
    fg = r.foreground_masks("v1")
    assert fg.shape == (T, H, W) and (fg[2] == TRACKS["v1"][2][2]).all()
    video = r.open_video("v1")
    assert len(video) == T and video[0].shape == (H, W, 3)


def test_mevis_reader(tmp_path):
    root = make_mevis(tmp_path / "mevis")
    r = get_reader("mevis", root, None)
    assert r.split == "valid_u" and r.has_ground_truth and not r.has_robustness
    e = list(r.expressions())[1]
    assert r.frame_size("m1") == (H, W)  # from the RLEs (MeViS metas carry no size)
    assert r.gt_masks(e)[2].sum() == TRACKS["v1"][2][2].sum()
    v = get_reader("mevis", root, "valid")
    assert not v.has_ground_truth and [x.anno_ids for x in v.expressions()] == [[], []]


def test_refytvos_and_refdavis_readers(tmp_path):
    r = get_reader("refytvos", make_ytvos(tmp_path / "yt"), "train")
    e = list(r.expressions("v1"))[0]
    assert e.obj_ids == ["1"] and r.gt_masks(e)[1].sum() == TRACKS["v1"][1][1].sum()
    assert not r.gt_masks(e)[2].any()
    valid = get_reader("refytvos", tmp_path / "yt", "valid")
    assert not valid.has_ground_truth and valid.server_videos() == ["v1"]
    d = get_reader("refdavis", make_ytvos(tmp_path / "davis", davis=True), "valid")
    exprs = list(d.expressions("v1"))
    assert len(exprs) == 8 and [x.extra["annotator"] for x in exprs[:5]] == [0, 1, 2, 3, 0]
    assert exprs[5].extra["object_index"] == 1 and exprs[5].obj_ids == ["2"]


@pytest.mark.parametrize("as_list", [True, False])
def test_reasonvos_reader(tmp_path, as_list):
    r = get_reader("reasonvos", make_reasonvos(tmp_path / "rv", as_list), None)
    exprs = list(r.expressions())
    assert [x.key for x in exprs] == ["v1/0", "v1/1", "v2/0"] and exprs[0].extra["source"] == "MeViS"
    assert r.eval_frames(exprs[0]) == FRAMES
    assert (r.gt_masks(exprs[0])[0] == TRACKS["v1"][1][0]).all()


def test_reasonseg_reader(tmp_path):
    r = get_reader("reasonseg", make_reasonseg(tmp_path / "rs"), "val")
    exprs = list(r.expressions())
    assert [x.video for x in exprs] == ["img1", "img2"] and exprs[0].text == "the thing you sit on"
    lab = r.label_map("img1")
    assert lab.shape == (20, 30) and (lab[2:10, 2:10] == 1).all() and (lab[10:16, 20:26] == 255).all()
    assert lab.sum() == 64 + 255 * 36  # the 'flag' shape is skipped
    assert r.gt_masks(exprs[0]).shape == (1, 20, 30)
    assert r.frame_names("img1") == ["img1"] and len(r.open_video("img1")) == 1


def test_synthetic_reader_extras(tmp_path):
    root = make_revos(tmp_path / "syn", split="valid")
    side = {"version": 1, "generator": {}, "videos": {},
            "expressions": {"v1/0": {"split": "valid", "tier": 1, "difficulty": 2.5, "key_interval": [0, 1],
                                     "target_frame": 0, "num_targets": 1}}}
    (root / "synthetic_meta.json").write_text(json.dumps(side))
    r = get_reader("synthetic", root, "valid")
    e = next(r.expressions())
    assert e.extra["tier"] == 1 and e.extra["key_interval"] == [0, 1] and e.extra["split"] == "valid"
    assert list(r.expressions())[1].extra == {"split": "valid"}
    assert len(list(get_reader("synthetic", root, "all").expressions())) == 5


def test_bad_layouts_name_the_file(tmp_path):
    with pytest.raises(DataRootError, match="meta_expressions_valid_.json"):
        get_reader("revos", tmp_path, "valid")
    with pytest.raises(DataRootError, match="data root not found"):
        get_reader("revos", tmp_path / "nope", "valid")
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_reader("kitti", tmp_path, None)
    root = make_revos(tmp_path / "revos")
    (root / "meta_expressions_valid_.json").write_text("{not json")
    with pytest.raises(DatasetError, match="meta_expressions_valid_.json"):
        list(get_reader("revos", root, "valid").expressions())
    root = make_revos(tmp_path / "revos2")
    md = json.loads((root / "mask_dict.json").read_text())
    md["11"][1] = {"size": [H + 1, W], "counts": md["11"][1]["counts"]}
    (root / "mask_dict.json").write_text(json.dumps(md))
    r = get_reader("revos", root, "valid")
    with pytest.raises(DatasetError, match="mask_dict.json"):
        r.gt_masks(list(r.expressions())[1])
    md["11"] = md["11"][:1]  # too few frames
    (root / "mask_dict.json").write_text(json.dumps(md))
    r = get_reader("revos", root, "valid")
    with pytest.raises(DatasetError, match="anno 11"):
        r.gt_masks(list(r.expressions())[1])
    with pytest.raises(DataRootError, match="MeViS split folder"):
        get_reader("mevis", tmp_path, "valid_u")
    assert set(BENCHMARKS) == {"revos", "mevis", "refytvos", "refdavis", "reasonvos", "reasonseg", "synthetic"}
