"""End to end: ``evaluate`` / ``videoseg-r1 evaluate`` on fixture datasets of every benchmark with known
scores, the JSON + CSV outputs, ``--workers``, RLE-json predictions, submission zips and bad inputs."""

import csv
import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from test_data_readers import (FRAMES, make_mevis, make_reasonseg, make_reasonvos, make_revos,
                               make_ytvos)
from videoseg_r1.cli import main
from videoseg_r1.data.registry import get_reader
from videoseg_r1.eval.evaluate import evaluate, format_table, write_results
from videoseg_r1.eval.protocols import PredictionError, PredictionFileMissing
from videoseg_r1.masks import rle_encode, write_binary_png

_spec = importlib.util.spec_from_file_location("bench_eval", Path(__file__).parents[1] / "benchmarks" / "bench_eval.py")
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)


def write_predictions(reader, pred_root, transform=None, skip=()):
    """Ground truth (optionally transformed per expression) as binary PNG predictions."""
    for e in reader.expressions():
        if e.key in skip:
            continue
        gt = reader.gt_masks(e)
        m = transform(e, gt) if transform else gt
        for fr, frame_mask in zip(reader.eval_frames(e), m):
            write_binary_png(Path(pred_root) / e.video / e.exp_id / f"{fr}.png", frame_mask)
    return Path(pred_root)


@pytest.fixture()
def revos(tmp_path):
    root = make_revos(tmp_path / "revos")
    return root, get_reader("revos", root, "valid")


# ------------------------------------------------------------------ ReVOS


def test_revos_perfect_predictions(revos, tmp_path):
    root, reader = revos
    pred = write_predictions(reader, tmp_path / "pred")
    res = evaluate("revos", root, "valid", pred, progress=False)
    assert not res.missing and len(res.rows) == 5
    for name in ("referring", "reasoning", "overall"):
        s = res.summary[name]
        assert (s["J"], s["F"], s["J&F"], s["R"]) == (100.0, 100.0, 100.0, 100.0)
    assert res.summary["referring"]["n"] == 2 and res.summary["reasoning"]["n"] == 2  # type 2 excluded


def test_revos_known_scores_missing_and_empty(revos, tmp_path):
    root, reader = revos
    # v1/0: empty prediction; its target is present in frames 0, 1 and absent in 2 -> J = F = 1/3, R = 1
    # v2/0: no prediction folder -> J = F = R = 0 and listed as missing
    pred = write_predictions(reader, tmp_path / "pred", skip={"v2/0"},
                             transform=lambda e, gt: np.zeros_like(gt) if e.key == "v1/0" else gt)
    res = evaluate("revos", root, "valid", pred, progress=False)
    rows = {f"{r.video}/{r.exp_id}": r for r in res.rows}
    assert rows["v1/0"].j == pytest.approx(1 / 3, abs=1e-15) and rows["v1/0"].f == pytest.approx(1 / 3, abs=1e-15)
    assert rows["v1/0"].r == 1.0
    assert res.missing == ["v2/0"] and (rows["v2/0"].j, rows["v2/0"].f, rows["v2/0"].r) == (0.0, 0.0, 0.0)
    ref = res.summary["referring"]
    # the official script rounds per expression: (33.33 + 0) / 2
    assert ref["J"] == pytest.approx(16.665, abs=1e-9) and ref["F"] == pytest.approx(16.665, abs=1e-9)
    assert ref["R"] == pytest.approx(50.0, abs=1e-9)
    assert res.summary["overall"]["J"] == pytest.approx((16.665 + 100) / 2, abs=1e-9)
    assert res.summary["overall"]["R"] == pytest.approx(75.0, abs=1e-9)
    exact = evaluate("revos", root, "valid", pred, progress=False, reference_rounding=False)
    assert exact.summary["referring"]["J"] == pytest.approx(100 / 6, abs=1e-9)


def test_revos_shifted_predictions_equal_reference_loop(revos, tmp_path):
    root, reader = revos
    pred = write_predictions(reader, tmp_path / "pred", transform=lambda e, gt: np.roll(gt, 1 + len(e.exp_id), axis=2))
    res = evaluate("revos", root, "valid", pred, progress=False)
    ref = REF.ref_eval_revos_dir(root, pred)
    assert all(r.j < 1 for r in res.rows)
    for r in res.rows:
        j, f, rob = ref[(r.video, r.exp_id)]
        assert abs(r.j - j) <= 1e-9 and abs(r.f - f) <= 1e-9 and abs(r.r - rob) <= 1e-9
    # two workers give identical rows
    res2 = evaluate("revos", root, "valid", pred, progress=False, workers=2)
    assert [(r.video, r.exp_id, r.j, r.f, r.r) for r in res2.rows] == [(r.video, r.exp_id, r.j, r.f, r.r) for r in res.rows]


def test_rle_json_predictions(revos, tmp_path):
    root, reader = revos
    pred = tmp_path / "pred"
    for e in reader.expressions():
        gt = reader.gt_masks(e)
        doc = {fr: (rle_encode(m) if m.any() else None) for fr, m in zip(FRAMES, gt)}
        (pred / e.video).mkdir(parents=True, exist_ok=True)
        (pred / e.video / f"{e.exp_id}.json").write_text(json.dumps(doc))
    res = evaluate("revos", root, "valid", pred, progress=False)
    assert res.summary["overall"]["J&F"] == 100.0
    doc = json.loads((pred / "v1" / "0.json").read_text())
    del doc["00001"]
    (pred / "v1" / "0.json").write_text(json.dumps(doc))
    with pytest.raises(PredictionFileMissing, match="00001"):
        evaluate("revos", root, "valid", pred, progress=False)


def test_cli_writes_json_csv_and_table(revos, tmp_path, capsys):
    root, reader = revos
    pred = write_predictions(reader, tmp_path / "pred", skip={"v2/0"})
    out = tmp_path / "out" / "results.json"
    rc = main(["evaluate", "--benchmark", "revos", "--data-root", str(root), "--split", "valid",
               "--predictions", str(pred), "--output", str(out), "--workers", "2", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "overall" in text and "referring" in text and "missing predictions (1" in text
    data = json.loads(out.read_text())
    assert data["benchmark"] == "revos" and data["missing"] == ["v2/0"] and "R" in data["summary"]["overall"]
    with open(out.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {"video", "exp_id", "J", "F", "J&F", "R"} <= set(rows[0])
    by = {(r["video"], r["exp_id"]): r for r in rows}
    assert float(by[("v1", "1")]["J"]) == 100.0 and by[("v2", "0")]["missing"] == "1"


@pytest.mark.parametrize("damage", ["missing_frame", "wrong_size", "corrupt_png"])
def test_bad_prediction_is_one_clear_error(revos, tmp_path, capsys, damage):
    root, reader = revos
    pred = write_predictions(reader, tmp_path / "pred")
    bad = pred / "v1" / "1" / "00001.png"
    if damage == "missing_frame":
        bad.unlink()
    elif damage == "wrong_size":
        write_binary_png(bad, np.zeros((5, 5), bool))
    else:
        bad.write_bytes(b"\x89PNG not really")
    rc = main(["evaluate", "--benchmark", "revos", "--data-root", str(root), "--predictions", str(pred), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(bad) in err
    with pytest.raises(PredictionFileMissing if damage == "missing_frame" else PredictionError):
        evaluate("revos", root, "valid", pred, progress=False)


def test_bad_data_root_and_annotation_are_one_line(revos, tmp_path, capsys):
    root, reader = revos
    pred = write_predictions(reader, tmp_path / "pred")
    rc = main(["evaluate", "--benchmark", "revos", "--data-root", str(tmp_path / "pred"), "--predictions", str(pred)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "meta_expressions_valid_.json" in err and len(err.splitlines()) == 1
    (root / "mask_dict.json").write_text("[broken")
    rc = main(["evaluate", "--benchmark", "revos", "--data-root", str(root), "--predictions", str(pred), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "mask_dict.json" in err
    rc = main(["evaluate", "--benchmark", "revos", "--data-root", str(root), "--predictions", str(tmp_path / "none")])
    assert rc == 2 and "predictions folder not found" in capsys.readouterr().err


# ------------------------------------------------------------------ other benchmarks


def test_mevis_valid_u_and_submission(tmp_path):
    root = make_mevis(tmp_path / "mevis")
    reader = get_reader("mevis", root, "valid_u")
    pred = write_predictions(reader, tmp_path / "pred")
    res = evaluate("mevis", root, "valid_u", pred, progress=False)
    assert res.summary["overall"]["J&F"] == 100.0 and "R" not in res.summary["overall"]
    # valid: no ground truth -> submission zip, <video>/<exp_id>/<frame>.png at the root
    out = tmp_path / "sub" / "mevis.zip"
    rc = main(["evaluate", "--benchmark", "mevis", "--data-root", str(root), "--split", "valid",
               "--predictions", str(pred), "--submission", str(out), "--no-progress"])
    assert rc == 0
    names = sorted(zipfile.ZipFile(out).namelist())
    assert names[0] == "m1/0/00000.png" and len(names) == 2 * len(FRAMES)


def test_refytvos_train_and_valid_submission(tmp_path):
    root = make_ytvos(tmp_path / "yt")
    reader = get_reader("refytvos", root, "train")
    pred = write_predictions(reader, tmp_path / "pred", transform=lambda e, gt: np.zeros_like(gt) if e.key == "v2/0" else gt)
    res = evaluate("refytvos", root, "train", pred, progress=False)
    assert res.summary["overall"]["J"] == pytest.approx(200 / 3, abs=1e-9)  # 3 expressions, one scores 0
    out = tmp_path / "yt.zip"
    rc = main(["evaluate", "--benchmark", "refytvos", "--data-root", str(root), "--split", "valid",
               "--predictions", str(pred), "--output", str(tmp_path / "r.json"), "--submission", str(out), "--no-progress"])
    assert rc == 0
    names = zipfile.ZipFile(out).namelist()
    assert "Annotations/v1/0/00000.png" in names and not any("/v2/" in n for n in names)  # v2 is a test video


def test_refdavis_four_annotators(tmp_path):
    root = make_ytvos(tmp_path / "davis", davis=True)
    reader = get_reader("refdavis", root, "valid")

    def swap_annotator1(e, gt):  # annotator 1 swaps the two objects of v1: Hungarian matching undoes it
        if e.video == "v1" and e.extra["annotator"] == 1:
            other = [x for x in reader.expressions("v1") if x.extra["annotator"] == 1 and x.exp_id != e.exp_id][0]
            return reader.gt_masks(other)
        return gt

    skip = {e.key for e in reader.expressions() if e.extra["annotator"] == 3}
    pred = write_predictions(reader, tmp_path / "pred", transform=swap_annotator1, skip=skip)
    res = evaluate("refdavis", root, "valid", pred, progress=False, workers=2)
    for a in (0, 1, 2):
        assert res.summary[f"annotator {a}"]["J&F"] == 100.0
    # annotator 3 predicted nothing: object a (absent in frame 2) scores 1/3, objects b and c score 0
    s3 = res.summary["annotator 3"]
    assert s3["J"] == pytest.approx(100 / 9, abs=1e-9) and s3["F"] == pytest.approx(100 / 9, abs=1e-9)
    assert res.summary["overall"]["J&F"] == pytest.approx((300 + 100 / 9) / 4, abs=1e-9)
    assert len(res.missing) == 3 and format_table(res).count("annotator") == 4


def test_reasonvos(tmp_path):
    root = make_reasonvos(tmp_path / "rv")
    reader = get_reader("reasonvos", root, None)
    pred = write_predictions(reader, tmp_path / "pred", transform=lambda e, gt: np.zeros_like(gt) if e.key == "v2/0" else gt)
    res = evaluate("reasonvos", root, None, pred, progress=False)
    assert res.summary["overall"]["J&F"] == pytest.approx(200 / 3, abs=1e-9)
    res = evaluate("reasonvos", root, None, pred, progress=False, missing="skip")
    assert res.summary["overall"]["n"] == 3


def test_reasonseg_giou_ciou(tmp_path):
    root = make_reasonseg(tmp_path / "rs")
    reader = get_reader("reasonseg", root, "val")
    tri = int(reader.gt_masks(list(reader.expressions())[1]).sum())

    def pred_fn(e, gt):
        if e.video == "img1":
            p = gt.copy()
            p[0, 10:16, 20:26] = True  # inside the ignore region: not counted
            return p
        return np.zeros_like(gt)

    pred = write_predictions(reader, tmp_path / "pred", transform=pred_fn)
    res = evaluate("reasonseg", root, "val", pred, progress=False)
    s = res.summary["overall"]
    assert s["gIoU"] == pytest.approx(100 * (64 / (64 + 1e-5) + 0) / 2, abs=1e-9)
    assert s["cIoU"] == pytest.approx(100 * 64 / (64 + tri + 1e-10), abs=1e-9)


def test_synthetic_perfect_and_shifted(tmp_path):
    synthetic = pytest.importorskip("videoseg_r1.data.synthetic")
    root = synthetic.generate(tmp_path / "syn", num_videos=2, frames=8, size=(64, 48), splits=("valid",), workers=1)
    reader = get_reader("synthetic", root, "valid")
    pred = write_predictions(reader, tmp_path / "perfect")
    res = evaluate("synthetic", root, "valid", pred, progress=False)
    assert res.summary["all expressions"]["J&F"] == 100.0 and res.summary["all expressions"]["R"] == 100.0
    assert "split valid" in res.summary and any(k.startswith("tier ") for k in res.summary)
    shift = write_predictions(reader, tmp_path / "shifted", transform=lambda e, gt: np.roll(gt, 2, axis=2))
    res = evaluate("synthetic", root, "valid", shift, progress=False)
    expected = []
    for e in reader.expressions():
        gt = reader.gt_masks(e).astype(np.uint8)
        p = np.roll(gt, 2, axis=2)
        expected.append((REF.ref_db_eval_iou(gt, p).mean() + REF.ref_db_eval_boundary(gt, p).mean()) / 2)
    assert res.summary["all expressions"]["J&F"] == pytest.approx(100 * np.mean(expected), abs=1e-9)
    assert res.summary["all expressions"]["J&F"] < 100
    js, cs = write_results(res, tmp_path / "syn.json")
    assert js.is_file() and cs.is_file() and "tier" in cs.read_text().splitlines()[0]
