"""Speed benchmark of the evaluator, and the per-frame reference implementation the tests compare with.

The reference below is written in the style of the official scripts (davis2017-evaluation's
``db_eval_iou`` / ``f_measure`` / ``db_statistics``, the ReVOS ``get_r2vos_robustness``): numpy and
cv2, one frame at a time, one process. It is our own code, kept deliberately straightforward, and it
is the yardstick for both correctness (``tests/test_eval_reference.py`` compares ours with it to 1e-9
on random masks) and speed (this script).

Run:  python benchmarks/bench_eval.py [--expressions 50] [--frames 100] [--height 480] [--width 854]
It times, in the same run on the same masks: (1) metrics only, masks in memory, ours vs the reference;
(2) end to end from files (ReVOS layout on disk, binary PNG predictions), ``videoseg-r1 evaluate``'s
API with 1 and 2 workers vs a reference loop reading the same files per frame with cv2. It checks
that every per-expression number is identical (to 1e-9) and prints expressions/s and speed-ups.
Measured numbers and the per-step breakdown: benchmarks/results/eval_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

# ----------------------------------------------------------------------------- reference metrics


def ref_disk(radius):
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    return (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.uint8)


def ref_db_eval_iou(annotation, segmentation, void_pixels=None):
    """Region similarity J, vectorised over frames as the official one is."""
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    if void_pixels is None:
        void_pixels = np.zeros_like(segmentation)
    else:
        void_pixels = void_pixels.astype(bool)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inters / union
    if j.ndim == 0:
        j = 1 if np.isclose(union, 0) else j
    else:
        j[np.isclose(union, 0)] = 1
    return j


def ref_seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def ref_f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    if void_pixels is None:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    else:
        void_pixels = void_pixels.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = ref_seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = ref_seg2bmap(gt_mask * np.logical_not(void_pixels))
    kernel = ref_disk(int(bound_pix))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0
    return 2 * precision * recall / (precision + recall)


def ref_db_eval_boundary(annotation, segmentation, void_pixels=None, bound_th=0.008):
    if annotation.ndim == 3:
        out = np.zeros(annotation.shape[0])
        for t in range(annotation.shape[0]):
            vp = None if void_pixels is None else void_pixels[t]
            out[t] = ref_f_measure(segmentation[t], annotation[t], vp, bound_th=bound_th)
        return out
    return ref_f_measure(segmentation, annotation, void_pixels, bound_th=bound_th)


def ref_db_statistics(per_frame_values):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        m = np.nanmean(per_frame_values)
        o = np.nanmean(per_frame_values > 0.5)
    ids = np.round(np.linspace(1, len(per_frame_values), 5) + 1e-10) - 1
    ids = ids.astype(np.uint8)  # the official cast (wraps past 255 frames)
    bins = [per_frame_values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        d = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return m, o, d


def ref_robustness(gt_masks, pred_masks, foreground_masks):
    """uint8 arrays (T, H, W) as the ReVOS script builds them."""
    out = []
    for gt, pred, fg in zip(gt_masks, pred_masks, foreground_masks):
        neg = ((1 - gt) * pred).sum()
        pos = fg.sum()
        out.append(max(1 - neg / (pos + 1e-6), 0.0))
    return np.array(out)


# ----------------------------------------------------------------------------- reference ReVOS loop


def ref_eval_revos_dir(data_root, pred_root, split="valid"):
    """Per-expression [J, F, R] like the ReVOS script's worker: masks read per frame with cv2."""
    from pycocotools import mask as cocomask

    data_root, pred_root = Path(data_root), Path(pred_root)
    meta = json.loads((data_root / f"meta_expressions_{split}_.json").read_text())["videos"]
    mask_dict = json.loads((data_root / "mask_dict.json").read_text())
    fore = json.loads((data_root / "mask_dict_foreground.json").read_text())
    out = {}
    for vid_name, vid in meta.items():
        for exp in vid["expressions"]:
            if not (pred_root / vid_name / exp).is_dir():
                out[(vid_name, exp)] = [0.0, 0.0, 0.0]
                continue
            p0 = cv2.imread(str(pred_root / vid_name / exp / f"{vid['frames'][0]}.png"), cv2.IMREAD_GRAYSCALE)
            h, w = p0.shape
            n = len(vid["frames"])
            gt = np.zeros((n, h, w), np.uint8)
            pred = np.zeros((n, h, w), np.uint8)
            fg = np.zeros((n, h, w), np.uint8)
            for t, frame in enumerate(vid["frames"]):
                for anno_id in vid["expressions"][exp]["anno_id"]:
                    rle = mask_dict[str(anno_id)][t]
                    if rle:
                        gt[t] += cocomask.decode(rle)
                entry = fore[vid_name]
                rle_f = entry["masks_rle"][t] if isinstance(entry, dict) else entry[t]
                m = cocomask.decode(rle_f)
                fg[t] = m.sum(axis=2).astype(np.uint8) if m.ndim == 3 else m.astype(np.uint8)
                pred[t] = cv2.imread(str(pred_root / vid_name / exp / f"{frame}.png"), cv2.IMREAD_GRAYSCALE)
            pred = (pred > 0).astype(np.uint8)  # our predictions are 0/255; parity R uses 0/1 values
            j = ref_db_eval_iou(gt, pred).mean()
            f = ref_db_eval_boundary(gt, pred).mean()
            r = ref_robustness(gt, pred, fg).mean()
            out[(vid_name, exp)] = [j, f, r]
    return out


# ----------------------------------------------------------------------------- benchmark data


def random_video_masks(rng, n_frames, height, width, n_objects=2, absent_frac=0.1):
    """Moving ellipses: per object (T, H, W) bool ground truth and a jittered prediction."""
    gts, preds = [], []
    for _ in range(n_objects):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        ax, ay = rng.uniform(0.05, 0.2) * width, rng.uniform(0.05, 0.25) * height
        vx, vy = rng.uniform(-2, 2), rng.uniform(-1.5, 1.5)
        gt = np.zeros((n_frames, height, width), np.uint8)
        pr = np.zeros((n_frames, height, width), np.uint8)
        absent = rng.random(n_frames) < absent_frac
        for t in range(n_frames):
            c = (int(cx + vx * t), int(cy + vy * t))
            if not absent[t]:
                cv2.ellipse(gt[t], c, (int(ax), int(ay)), t % 180, 0, 360, 1, -1)
            if rng.random() > absent_frac / 2:
                jc = (c[0] + int(rng.integers(-6, 7)), c[1] + int(rng.integers(-6, 7)))
                cv2.ellipse(pr[t], jc, (int(ax * rng.uniform(0.85, 1.15)), int(ay * rng.uniform(0.85, 1.15))),
                            (t + int(rng.integers(-10, 10))) % 180, 0, 360, 1, -1)
        gts.append(gt.astype(bool))
        preds.append(pr.astype(bool))
    return gts, preds


def bench_metrics(n_expr, n_frames, height, width, seed=0):
    from videoseg_r1.eval.metrics import jf

    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_expr):
        g, p = random_video_masks(rng, n_frames, height, width, n_objects=1)
        pairs.append((g[0], p[0]))
    t0 = time.perf_counter()
    ours = [jf(p, g) for g, p in pairs]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [(ref_db_eval_iou(g.astype(np.uint8), p.astype(np.uint8)),
            ref_db_eval_boundary(g.astype(np.uint8), p.astype(np.uint8))) for g, p in pairs]
    t_ref = time.perf_counter() - t0
    err = max(max(np.abs(a[0] - b[0]).max(), np.abs(a[1] - b[1]).max()) for a, b in zip(ours, ref))
    return t_ours, t_ref, err


def write_revos_fixture(root, pred_root, n_expr, n_frames, height, width, seed=0, exprs_per_video=5):
    """A ReVOS-layout dataset (JPEGImages, mask_dict, foreground, meta) + binary PNG predictions."""
    from videoseg_r1.masks import rle_encode, write_binary_png

    rng = np.random.default_rng(seed)
    root, pred_root = Path(root), Path(pred_root)
    meta = {"videos": {}}
    mask_dict, fore = {}, {}
    anno = 0
    n_videos = (n_expr + exprs_per_video - 1) // exprs_per_video
    done = 0
    for v in range(n_videos):
        video = f"vid{v:03d}"
        frames = [f"{t:05d}" for t in range(n_frames)]
        (root / "JPEGImages" / video).mkdir(parents=True, exist_ok=True)
        for fr in frames[:1]:
            cv2.imwrite(str(root / "JPEGImages" / video / f"{fr}.jpg"), np.zeros((height, width, 3), np.uint8))
        k = min(exprs_per_video, n_expr - done)
        gts, preds = random_video_masks(rng, n_frames, height, width, n_objects=k)
        exps = {}
        for i in range(k):
            mask_dict[str(anno)] = [rle_encode(m) if m.any() else None for m in gts[i]]
            exps[str(i)] = {"exp": f"object {i}", "obj_id": [i], "anno_id": [anno], "type_id": i % 2}
            for t, fr in enumerate(frames):
                write_binary_png(pred_root / video / str(i) / f"{fr}.png", preds[i][t])
            anno += 1
        union = np.zeros((n_frames, height, width), bool)
        for g in gts:
            union |= g
        fore[video] = {"masks_rle": [rle_encode(m) for m in union]}
        meta["videos"][video] = {"frames": frames, "height": height, "width": width, "expressions": exps}
        done += k
    (root / "meta_expressions_valid_.json").write_text(json.dumps(meta))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    (root / "mask_dict_foreground.json").write_text(json.dumps(fore))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expressions", type=int, default=50)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--skip-files", action="store_true", help="only the in-memory metric benchmark")
    args = ap.parse_args(argv)
    n, t, h, w = args.expressions, args.frames, args.height, args.width
    print(f"{n} expressions x {t} frames at {h}x{w}, cpu cores visible: {os.cpu_count()}, "
          f"load average {_load()} (other processes share these cores: compare only quiet runs)")

    t_ours, t_ref, err = bench_metrics(n, t, h, w)
    print(f"[metrics, in memory]  ours {n / t_ours:8.2f} expr/s   reference {n / t_ref:8.2f} expr/s   "
          f"speed-up {t_ref / t_ours:5.1f}x   max |diff| {err:.1e}")
    if args.skip_files:
        return 0

    from videoseg_r1.eval.evaluate import evaluate

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        write_revos_fixture(tmp / "data", tmp / "pred", n, t, h, w)
        t0 = time.perf_counter()
        ref = ref_eval_revos_dir(tmp / "data", tmp / "pred")
        t_ref = time.perf_counter() - t0
        times = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            res = evaluate("revos", tmp / "data", "valid", tmp / "pred", workers=workers, progress=False)
            times[workers] = time.perf_counter() - t0
        err = 0.0
        for row in res.rows:
            j, f, r = ref[(row.video, row.exp_id)]
            err = max(err, abs(row.j - j), abs(row.f - f), abs(row.r - r))
        print(f"[end to end, files]   reference {n / t_ref:8.2f} expr/s")
        for workers, tt in times.items():
            print(f"                      ours --workers {workers}: {n / tt:8.2f} expr/s   speed-up {t_ref / tt:5.1f}x")
        print(f"                      max |diff| per expression (J, F, R): {err:.1e}")
        print(f"load average at the end {_load()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
