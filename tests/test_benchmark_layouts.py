"""Every benchmark in its published on-disk layout, end to end through the real CLI (issue 22, issue 15
item 4): a tiny fixture per benchmark (names, ids and subtleties as published) runs ``predict`` with
the tiny saved models and then ``evaluate`` (or the submission zip); frame rates reach the trace.

Layout facts and their sources are in each reader's docstring (``videoseg_r1/data/*.py``).
"""

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from videoseg_r1.cli import main
from videoseg_r1.data.registry import get_reader
from videoseg_r1.masks import rle_encode, write_palette_png

H, W = 48, 64


@pytest.fixture(scope="module")
def models(tiny_model_args):
    return [*tiny_model_args, "--max-new-tokens", "8", "--target-frame", "middle"]


def square(t: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[10:30, 8 + 6 * t:28 + 6 * t] = True
    return m


def jpegs(folder: Path, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, fr in enumerate(frames):
        img = np.full((H, W, 3), 60, np.uint8)
        img[square(t)] = (220, 120, 40)
        cv2.imwrite(str(folder / f"{fr}.jpg"), img)


def predict(models, benchmark, root, split, out, *extra) -> int:
    args = ["predict", "--benchmark", benchmark, "--data-root", str(root), "--out", str(out), *models, *extra]
    if split is not None:
        args[5:5] = ["--split", split]
    return main(args)


def trace(out: Path, video: str, exp_id: str) -> dict:
    return json.loads((out / ".run" / "traces" / video / f"{exp_id}.json").read_text())


# ----------------------------------------------------------------------------- Ref-YouTube-VOS

YT_FRAMES = ["00000", "00005", "00010"]  # every 5th frame of the 30 fps video


def make_refytvos(root: Path) -> Path:
    """train (palette annotations), valid and test metas; the valid meta also lists the test video
    'tst00001', which has no frames in valid/JPEGImages (as in the official download)."""
    exps = {"0": {"exp": "a brown dog running", "obj_id": "1"}, "1": {"exp": "the dog", "obj_id": "1"}}
    metas = {"train": {"trn00001": {"frames": YT_FRAMES, "expressions": exps}},
             "valid": {"val00001": {"frames": YT_FRAMES, "expressions": exps},
                       "tst00001": {"frames": YT_FRAMES, "expressions": {"0": {"exp": "a cat"}}}},
             "test": {"tst00001": {"frames": YT_FRAMES, "expressions": {"0": {"exp": "a cat"}}}}}
    for split, videos in metas.items():
        d = root / "meta_expressions" / split
        d.mkdir(parents=True)
        (d / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    jpegs(root / "train" / "JPEGImages" / "trn00001", YT_FRAMES)
    jpegs(root / "valid" / "JPEGImages" / "val00001", YT_FRAMES)  # no folder for the test video
    for t, fr in enumerate(YT_FRAMES):
        write_palette_png(root / "train" / "Annotations" / "trn00001" / f"{fr}.png", square(t).astype(np.uint8))
    return root


def test_refytvos_valid_writes_the_submission_on_the_official_layout(models, tmp_path, capsys):
    root = make_refytvos(tmp_path / "ref-youtube-vos")
    reader = get_reader("refytvos", root, "valid")
    assert reader.videos() == ["val00001"] and reader.frame_rate == 6.0
    out = tmp_path / "pred"
    assert predict(models, "refytvos", root, "valid", out) == 0
    names = sorted(zipfile.ZipFile(out.with_suffix(".zip")).namelist())
    assert names == [f"Annotations/val00001/{e}/{fr}.png" for e in ("0", "1") for fr in YT_FRAMES]
    with zipfile.ZipFile(out.with_suffix(".zip")) as zf, zf.open(names[0]) as fh:
        img = Image.open(fh)
        img.load()
    assert img.mode == "L" and img.size == (W, H) and set(np.unique(np.asarray(img))) <= {0, 255}
    assert trace(out, "val00001", "0")["fps"] == 6.0  # 30 fps / 5
    assert "wrote the submission zip" in capsys.readouterr().out
    # train has ground truth: predict + evaluate
    assert predict(models, "refytvos", root, "train", tmp_path / "pred_train") == 0
    assert main(["evaluate", "--benchmark", "refytvos", "--data-root", str(root), "--split", "train",
                 "--predictions", str(tmp_path / "pred_train"), "--output", str(tmp_path / "r.json"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["num_expressions"] == 2


def test_refytvos_valid_needs_the_test_meta(tmp_path, capsys):
    root = make_refytvos(tmp_path / "yt")
    (root / "meta_expressions" / "test" / "meta_expressions.json").unlink()
    assert main(["predict", "--benchmark", "refytvos", "--data-root", str(root), "--split", "valid",
                 "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err.strip()
    assert "test" in err and "meta_expressions.json not found" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- MeViS

M_FRAMES = ["00000", "00001", "00002"]


def make_mevis(root: Path, broken_valid_video: bool = False) -> Path:
    """train / valid_u with mask_dict.json, valid without (texts only); 5-digit frame names."""
    for split in ("train", "valid_u", "valid"):
        d = root / split
        exps = {"0": {"exp": "the square moving right", "obj_id": [0], "anno_id": [3]},
                "1": {"exp": "moving things", "obj_id": [0], "anno_id": [3]}}
        videos = {"a1b2c3d4e5f6": {"frames": M_FRAMES, "expressions": exps}}
        if split == "valid":
            videos = {v: {"frames": M_FRAMES, "expressions": {k: {"exp": e["exp"]} for k, e in x["expressions"].items()}}
                      for v, x in videos.items()}
            if broken_valid_video:  # a valid video whose frame folder is missing: its expressions fail
                videos["0f0f0f0f0f0f"] = {"frames": M_FRAMES, "expressions": {"0": {"exp": "a bird"}}}
        d.mkdir(parents=True)
        (d / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
        jpegs(d / "JPEGImages" / "a1b2c3d4e5f6", M_FRAMES)
        if split != "valid":
            (d / "mask_dict.json").write_text(json.dumps({"3": [rle_encode(square(t)) for t in range(3)]}))
    return root


def test_mevis_valid_u_evaluates_and_valid_writes_root_level_zip(models, tmp_path):
    root = make_mevis(tmp_path / "mevis")
    out = tmp_path / "pred_u"
    assert predict(models, "mevis", root, "valid_u", out) == 0
    assert main(["evaluate", "--benchmark", "mevis", "--data-root", str(root), "--split", "valid_u",
                 "--predictions", str(out), "--output", str(tmp_path / "m.json"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["num_expressions"] == 2 and res["num_missing"] == 0
    out = tmp_path / "pred_v"
    assert predict(models, "mevis", root, "valid", out) == 0
    names = sorted(zipfile.ZipFile(out.with_suffix(".zip")).namelist())
    assert names == [f"a1b2c3d4e5f6/{e}/{fr}.png" for e in ("0", "1") for fr in M_FRAMES]


def test_incomplete_predict_exits_nonzero_and_says_why_no_zip(models, tmp_path, capsys):
    """One valid video has no frames: its expression fails. Shard 1/2 holds it and exits 1 with the
    summary; shard 0/2 succeeds (exit 0) and says the zip waits for the other shard."""
    root = make_mevis(tmp_path / "mevis", broken_valid_video=True)
    out = tmp_path / "pred"
    exprs = [e.key for e in get_reader("mevis", root, "valid").expressions()]
    assert exprs == ["a1b2c3d4e5f6/0", "a1b2c3d4e5f6/1", "0f0f0f0f0f0f/0"]
    capsys.readouterr()
    assert predict(models, "mevis", root, "valid", out, "--shard", "1/2") == 0  # a1b2.../1 only
    err = capsys.readouterr().err
    assert "not written: 2 expressions of other shards are not done yet" in err
    assert predict(models, "mevis", root, "valid", out, "--shard", "0/2") == 1  # a1b2.../0 and the broken one
    cap = capsys.readouterr()
    assert "predict incomplete: 1 of 2 expressions of shard 0/2 failed (first: 0f0f0f0f0f0f/0: DataRootError" in cap.err
    assert str(out / ".run" / "errors-0of2.jsonl") in cap.err
    assert "not written: 1 expressions of this shard failed (first: 0f0f0f0f0f0f/0)" in cap.err
    assert not out.with_suffix(".zip").exists() and not list(tmp_path.glob(".*.zip.tmp*"))


# ----------------------------------------------------------------------------- ReVOS

REVOS_VIDEO = "UVO/all/-fbscFfkh4M"  # ReVOS ids are source-dataset paths


def make_revos(root: Path, video: str = REVOS_VIDEO, frames=None, exp_id: str = "0") -> Path:
    frames = frames or ["00000", "00001", "00002"]
    exps = {exp_id: {"exp": "the object that moves", "obj_id": [1], "anno_id": [7], "type_id": 0},
            "1": {"exp": "what would you chase", "obj_id": [1], "anno_id": [7], "type_id": 1},
            "2": {"exp": "nothing", "obj_id": [1], "anno_id": [7], "type_id": 2}}
    meta = {"videos": {video: {"frames": frames, "height": H, "width": W, "expressions": exps}}}
    root.mkdir(parents=True)
    (root / "meta_expressions_valid_.json").write_text(json.dumps(meta))
    (root / "mask_dict.json").write_text(json.dumps({"7": [rle_encode(square(t)) for t in range(3)]}))
    (root / "mask_dict_foreground.json").write_text(json.dumps(
        {video: {"masks_rle": [rle_encode(square(t)) for t in range(3)]}}))
    (root / "JPEGImages").mkdir()
    if ".." not in video and not video.startswith("/"):
        jpegs(root / "JPEGImages" / video, [f for f in frames])
    return root


def test_revos_nested_video_id_predicts_and_evaluates(models, tmp_path):
    root = make_revos(tmp_path / "ReVOS")
    out = tmp_path / "pred"
    assert predict(models, "revos", root, "valid", out) == 0
    assert sorted(p.name for p in (out / "UVO" / "all" / "-fbscFfkh4M" / "0").iterdir()) == \
        ["00000.png", "00001.png", "00002.png"]
    assert main(["evaluate", "--benchmark", "revos", "--data-root", str(root), "--predictions", str(out),
                 "--output", str(tmp_path / "r.json"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["num_expressions"] == 3 and res["num_missing"] == 0 and "R" in res["summary"]["overall"]


# ----------------------------------------------------------------------------- Ref-DAVIS17

D_FRAMES = ["00000", "00001", "00002"]


def make_refdavis(root: Path) -> Path:
    """ReferFormer's conversion: per object k, exp ids 4k..4k+3 = annotator 1 first-frame, annotator 1
    full-video, annotator 2 first-frame, annotator 2 full-video; Annotations = DAVIS unsupervised."""
    exps = {}
    for k, obj in enumerate(("1", "2")):
        for a, kind in enumerate(("first frame", "full video", "first frame", "full video")):
            exps[str(4 * k + a)] = {"exp": f"object {obj}, annotator {1 + a // 2}, {kind}", "obj_id": obj}
    d = root / "meta_expressions" / "valid"
    d.mkdir(parents=True)
    (d / "meta_expressions.json").write_text(json.dumps({"videos": {"bike-packing": {"frames": D_FRAMES,
                                                                                     "expressions": exps}}}))
    jpegs(root / "valid" / "JPEGImages" / "bike-packing", D_FRAMES)
    for t, fr in enumerate(D_FRAMES):
        ids = square(t).astype(np.uint8)
        ids[40:46, 2:8] = 2
        write_palette_png(root / "valid" / "Annotations" / "bike-packing" / f"{fr}.png", ids)
    return root


def test_refdavis_four_expression_sets_predict_and_evaluate(models, tmp_path):
    root = make_refdavis(tmp_path / "ref-davis")
    reader = get_reader("refdavis", root, "valid")
    e = {x.exp_id: x.extra for x in reader.expressions()}
    assert (e["5"]["annotator"], e["5"]["object_index"], e["5"]["annotator_person"], e["5"]["expression_kind"]) == \
        (1, 1, 1, "full_video")
    assert e["2"]["annotator_person"] == 2 and e["2"]["expression_kind"] == "first_frame"
    out = tmp_path / "pred"
    assert predict(models, "refdavis", root, "valid", out) == 0
    assert trace(out, "bike-packing", "0")["fps"] == 24.0
    assert main(["evaluate", "--benchmark", "refdavis", "--data-root", str(root), "--predictions", str(out),
                 "--output", str(tmp_path / "d.json"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "d.json").read_text())["summary"]
    assert {f"annotator {a}" for a in range(4)} | {"overall"} == set(summary)


# ----------------------------------------------------------------------------- ReasonVOS


def make_reasonvos(root: Path) -> Path:
    """Official form: ``expressions`` a dict, masks under Annotations/<source>_<video>_<obj_id>."""
    frames = ["00000", "00001", "00002"]
    meta = {"videos": {"4a5b6c7d8e": {"source": "MeViS", "frames": frames, "is_sent": True, "expressions": {
        "0": {"obj_id": 2, "exp_text": "Which object would a cat chase?", "is_sent": True}}}}}
    root.mkdir(parents=True)
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    jpegs(root / "JPEGImages" / "4a5b6c7d8e", frames)
    d = root / "Annotations" / "mevis_4a5b6c7d8e_2"  # benchmark_check.py lower-cases the source
    d.mkdir(parents=True)
    for t, fr in enumerate(frames):
        cv2.imwrite(str(d / f"{fr}.png"), square(t).astype(np.uint8) * 255)
    return root


def test_reasonvos_predicts_and_evaluates(models, tmp_path):
    root = make_reasonvos(tmp_path / "ReasonVOS")
    out = tmp_path / "pred"
    assert predict(models, "reasonvos", root, None, out) == 0
    assert main(["evaluate", "--benchmark", "reasonvos", "--data-root", str(root), "--predictions", str(out),
                 "--output", str(tmp_path / "v.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["num_expressions"] == 1


# ----------------------------------------------------------------------------- ReasonSeg


def test_reasonseg_predicts_and_scores_giou_ciou(models, tmp_path):
    d = tmp_path / "reason_seg" / "val"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "2318281_7c83d0e8b1_o.jpg"), np.full((H, W, 3), 90, np.uint8))
    shapes = [{"label": "target", "points": [[5, 5], [30, 5], [30, 30], [5, 30]], "shape_type": "polygon"}]
    (d / "2318281_7c83d0e8b1_o.json").write_text(json.dumps({"text": ["where would you sit?"],
                                                             "is_sentence": True, "shapes": shapes}))
    out = tmp_path / "pred"
    assert predict(models, "reasonseg", tmp_path / "reason_seg", "val", out) == 0
    assert (out / "2318281_7c83d0e8b1_o" / "0" / "2318281_7c83d0e8b1_o.png").is_file()
    assert main(["evaluate", "--benchmark", "reasonseg", "--data-root", str(tmp_path / "reason_seg"),
                 "--split", "val", "--predictions", str(out), "--output", str(tmp_path / "s.json"),
                 "--no-progress"]) == 0
    assert {"gIoU", "cIoU"} <= set(json.loads((tmp_path / "s.json").read_text())["summary"]["overall"])


# ----------------------------------------------------------------------------- segment --fps


def test_segment_frame_folder_takes_fps(models, tmp_path):
    frames = tmp_path / "frames"
    jpegs(frames, ["00000", "00005", "00010"])
    out = tmp_path / "seg"
    main(["segment", str(frames), "--query", "the orange square", "--out", str(out), "--fps", "6",
          "--no-overlay", *models])
    assert json.loads((out / "trace.json").read_text())["fps"] == 6.0
