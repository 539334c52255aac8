"""Per-benchmark scoring protocols: how predictions are read, how each expression is scored and how
the per-expression scores become the numbers each benchmark reports. ``eval/evaluate.py`` drives them.

Predictions (``PredictionStore``), for expression ``<video>/<exp_id>`` and frame ``<frame>``:

* binary PNGs ``PRED/<video>/<exp_id>/<frame>.png`` (any non-zero pixel, any channel = foreground), or
* one json per expression ``PRED/<video>/<exp_id>.json`` = ``{"<frame>": RLE or null, ...}`` where RLE
  is COCO ``{"size": [H, W], "counts": str or list}`` and null means an empty mask.

A missing expression (neither form present) scores 0 and is listed as missing (``missing="zero"``, the
official ReVOS / MeViS behaviour) or is left out of the means (``missing="skip"``, what the official
ReasonVOS script does). A missing frame inside a present expression, a wrong size or an unreadable file
raise ``PredictionError`` / ``PredictionFileMissing`` naming the file.

ReVOS-shaped benchmarks (ReVOS, MeViS, synthetic) are scored block by block on windows around the
foreground, straight from the ground truth's RLE runs and the PNGs decoded on threads
(``eval/windows.py``, for speed); the others decode full masks and call ``metrics.jf``. Same numbers.

Protocols (all scores in percent in the summaries):

* ReVOS: per expression J and F averaged over all frames of the video (absent-target frames included;
  multi-object -> union of targets), R averaged likewise; subsets referring (type 0), reasoning
  (type 1), overall = mean of the two subset values (type 2 excluded). The official script rounds each
  expression's percentages to 2 decimals before averaging; ``reference_rounding=True`` (the ReVOS
  default) does the same so the summary equals the official one exactly. R defaults to the official
  uint8 arithmetic (``r_mode="parity"``, predictions taken as 0/1 masks; see ``metrics.robustness`` for
  what differs, including the official script's x255 when it reads 0/255 PNGs); ``"corrected"`` counts
  false positives against the union of the targets.
* MeViS, Ref-YouTube-VOS (train), ReasonVOS: mean over expressions of the per-expression J and F.
* Synthetic: the ReVOS protocol (no rounding) plus breakdowns by split, tier and difficulty level.
* Ref-DAVIS17: per annotator set (exp ids 4k + a), the set's object masks are combined into one
  palette frame (lowest object first where they overlap) and scored with the DAVIS 2017 unsupervised
  evaluation: proposals 1..max id (at most 20), Hungarian matching on mean (J+F)/2 against the ground
  truth objects (ids 1..max id of the first ground-truth frame, 255 = void), per-object mean / recall /
  decay, J&F-Mean = (mean J + mean F) / 2 over all objects; the 4 sets are averaged.
* ReasonSeg: gIoU (mean per-image IoU, LISA's eps) and cIoU (cumulative), ignore regions excluded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np

from videoseg_r1.config import DIFFICULTY_TAU_EASY, DIFFICULTY_TAU_HARD
from videoseg_r1.data.base import BenchmarkReader, Expression
from videoseg_r1.data.rle import RleTrack, track_from_rles
from videoseg_r1.eval.metrics import (RobustnessMode, ciou, db_statistics, giou, iou_counts, jf, robustness,
                                      robustness_from_counts)
from videoseg_r1.eval.windows import PngFrames, score_blocks
from videoseg_r1.masks import MaskError, union
from videoseg_r1.names import UnsafePathError, safe_join

MissingPolicy = Literal["zero", "skip"]
DAVIS_MAX_PROPOSALS = 20  # davis2017-evaluation's limit on proposals per sequence


class PredictionError(ValueError):
    """An unreadable, malformed or wrongly sized prediction (the message names the file)."""


class PredictionFileMissing(FileNotFoundError):
    """A frame is missing inside a present prediction folder or json (the message names it)."""


# ----------------------------------------------------------------------------- predictions


class PredictionStore:
    """Reads predicted masks from ``root`` (see the module docstring for the two layouts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"predictions folder not found: {self.root}")
        self._planned: dict[str, PngFrames] = {}

    def folder(self, expr: Expression) -> Path:
        return self._join(self.root, expr.video, expr.exp_id)

    def json_path(self, expr: Expression) -> Path:
        return self._join(self.root, expr.video, f"{expr.exp_id}.json")

    @staticmethod
    def _join(root: Path, *names) -> Path:
        """A prediction path from names, refused (``PredictionError``) if it would leave ``root``."""
        try:
            return safe_join(root, *names)
        except UnsafePathError as exc:
            raise PredictionError(str(exc)) from None

    def has(self, expr: Expression) -> bool:
        return self.folder(expr).is_dir() or self.json_path(expr).is_file()

    def load(self, expr: Expression, frames: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
        """(T, H, W) bool masks of ``frames``; raises if any frame is missing or wrongly sized."""
        src = self.source(expr, frames, shape)
        try:
            return src.crop(0, len(frames), slice(0, shape[0]), slice(0, shape[1])) != 0
        finally:
            if isinstance(src, PngFrames):
                src.close()

    def source(self, expr: Expression, frames: Sequence[str], shape: tuple[int, int]) -> PngFrames | RleTrack:
        """The prediction as a mask source for ``windows.score_blocks``: PNG frames decoded on threads,
        or the json's RLEs kept as runs. Errors surface when the bad frame is reached."""
        folder = self.folder(expr)
        if folder.is_dir():
            src = self._planned.pop(expr.key, None)
            if src is None or len(src.paths) != len(frames):
                src = self._png_frames(folder, frames, shape)
            src.successor = next(reversed(self._planned.values()), None)
            return src
        path = self.json_path(expr)
        if not path.is_file():
            raise PredictionFileMissing(f"no prediction for {expr.key}: neither {folder}/ nor {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise PredictionError(f"malformed prediction json {path}: {exc}") from None
        if not isinstance(data, dict):
            raise PredictionError(f"malformed prediction json {path}: expected {{frame: RLE or null}}")
        for fr in frames:
            if fr not in data:
                raise PredictionFileMissing(f"frame {fr!r} missing from prediction json {path}")
        try:
            return track_from_rles([data[fr] for fr in frames], shape, where=str(path), frame_names=frames)
        except MaskError as exc:
            raise PredictionError(str(exc)) from None

    def plan(self, expr: Expression, frames: Sequence[str], shape: tuple[int, int]) -> None:
        """Announce the expression that will be scored after the current one (sequential evaluation):
        its PNG frames are decoded once the current expression has queued all of its own."""
        folder = self.folder(expr)
        if folder.is_dir():
            self._planned[expr.key] = self._png_frames(folder, frames, shape)
            while len(self._planned) > 2:  # the current expression's and the next one's
                self._planned.pop(next(iter(self._planned))).close()

    def _png_frames(self, folder: Path, frames: Sequence[str], shape: tuple[int, int]) -> PngFrames:
        return PngFrames([str(self._join(folder, f"{fr}.png")) for fr in frames], lambda p: self._read_png(p, shape))

    @staticmethod
    def _read_png(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
        """One prediction frame as (H, W) uint8, non-zero = foreground (values kept: no full-frame pass)."""
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            if not os.path.isfile(path):
                raise PredictionFileMissing(f"prediction frame missing: {path}")
            raise PredictionError(f"cannot read prediction {path}: not a readable PNG")
        if img.ndim == 3:
            img = img.max(axis=2)
        if img.shape != tuple(shape):
            raise PredictionError(f"prediction {path} has size {img.shape[0]}x{img.shape[1]}, "
                                  f"the ground truth is {shape[0]}x{shape[1]}")
        if img.dtype != np.uint8:  # 16-bit PNGs
            img = (img != 0).view(np.uint8)
        return img


# ----------------------------------------------------------------------------- per expression


@dataclass
class ExpressionResult:
    """Scores of one expression, fractions in [0, 1] (``r`` None where the benchmark has no R)."""

    video: str
    exp_id: str
    j: float
    f: float
    r: float | None = None
    num_frames: int = 0
    missing: bool = False
    type_id: int | None = None
    text: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


@dataclass
class ScoreOptions:
    r_mode: RobustnessMode = "parity"
    missing: MissingPolicy = "zero"


def score_expression(reader: BenchmarkReader, store: PredictionStore, expr: Expression,
                     options: ScoreOptions) -> ExpressionResult:
    """J, F (and R where the benchmark has foreground masks) of one expression, averaged over frames."""
    extra = {k: v for k, v in expr.extra.items() if isinstance(v, (int, float, str, bool)) or v is None}
    base = dict(video=expr.video, exp_id=expr.exp_id, type_id=expr.type_id, text=expr.text, extra=extra)
    has_r = reader.has_robustness
    if not store.has(expr):
        return ExpressionResult(j=0.0, f=0.0, r=0.0 if has_r else None, missing=True, **base)
    frames = reader.eval_frames(expr)
    if hasattr(reader, "target_tracks"):  # ReVOS-shaped: ground truth as runs, scored window by window
        return _score_blocks_expression(reader, store, expr, options, frames, base)
    inst = None
    if has_r and options.r_mode == "parity" and expr.anno_ids:
        inst = reader.instance_masks(expr)  # decoded once: the union below is the ground truth
        gt = union(inst)
    else:
        gt = reader.gt_masks(expr)
    pred = store.load(expr, frames, gt.shape[1:])
    j_t, f_t, counts = jf(pred, gt, return_counts=True)
    r = None
    if has_r:
        pos = reader.foreground_counts(expr.video)  # type: ignore[attr-defined]
        if pos is not None:
            if len(pos) != len(frames):
                raise ValueError(f"foreground masks of {expr.video} have {len(pos)} frames, the video {len(frames)}")
            if inst is not None and len(inst) > 1:  # targets may overlap: the full uint8 arithmetic
                rob = robustness(pred, inst, reader.foreground_masks(expr.video), mode=options.r_mode)
            else:  # false positives = |pred| - |pred ∩ gt|, from the counts J already made
                rob = robustness_from_counts(counts.pred - counts.inter, pos, options.r_mode)
            r = float(rob.mean())
    return ExpressionResult(j=float(j_t.mean()), f=float(f_t.mean()), r=r, num_frames=len(frames), **base)


def _score_blocks_expression(reader, store: PredictionStore, expr: Expression, options: ScoreOptions,
                             frames: Sequence[str], base: dict) -> ExpressionResult:
    """``score_expression`` for readers whose targets are RLE tracks (``windows.score_blocks``)."""
    shape = reader.frame_size(expr.video)
    targets = reader.target_tracks(expr)
    pos = reader.foreground_counts(expr.video) if reader.has_robustness else None
    if pos is not None and len(pos) != len(frames):
        raise ValueError(f"foreground masks of {expr.video} have {len(pos)} frames, the video {len(frames)}")
    pred = store.source(expr, frames, shape)
    try:
        s = score_blocks(pred, targets, len(frames), shape, parity_neg=pos is not None and options.r_mode == "parity")
    finally:
        if isinstance(pred, PngFrames):
            pred.close()
    r = None
    if pos is not None:
        neg = s.parity_neg if options.r_mode == "parity" else s.counts.pred - s.counts.inter
        r = float(robustness_from_counts(neg, pos, options.r_mode).mean())
    return ExpressionResult(j=float(s.j.mean()), f=float(s.f.mean()), r=r, num_frames=len(frames), **base)


def score_image_expression(reader: BenchmarkReader, store: PredictionStore, expr: Expression,
                           options: ScoreOptions) -> ExpressionResult:
    """ReasonSeg: per-image intersection / union (stored in ``extra``), J = plain IoU."""
    base = dict(video=expr.video, exp_id=expr.exp_id, type_id=None, text=expr.text)
    gt = reader.gt_masks(expr)
    ignore = reader.ignore_mask(expr)  # type: ignore[attr-defined]
    present = store.has(expr)
    # a missing image is scored as an empty prediction (LISA scores inline and has no such case)
    pred = store.load(expr, reader.eval_frames(expr), gt.shape[1:]) if present else np.zeros_like(gt)
    inter, uni = iou_counts(pred[0], gt[0], ignore[0])
    return ExpressionResult(j=1.0 if uni == 0 else inter / uni, f=float("nan"), num_frames=1, missing=not present,
                            extra={"intersection": inter, "union": uni}, **base)


# ----------------------------------------------------------------------------- summaries


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _subset(rows: list[ExpressionResult], rounding: bool) -> dict:
    """J, F, J&F (and R) in percent over rows; ``rounding`` = ReVOS's per-expression round(100x, 2)."""
    def pct(x: float) -> float:
        return float(np.round(np.float64(100 * x), 2)) if rounding else 100 * x

    js = [pct(r.j) for r in rows]
    fs = [pct(r.f) for r in rows]
    out = {"J": _mean(js), "F": _mean(fs), "n": len(rows)}
    out["J&F"] = (out["J"] + out["F"]) / 2
    rs = [r.r for r in rows if r.r is not None]
    if rs:
        out["R"] = _mean([pct(x) for x in rs])
    return out


def difficulty_level(d: float | None) -> str | None:
    """easy / medium / hard from a difficulty D (thresholds of config.py)."""
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return None
    return "easy" if d < DIFFICULTY_TAU_EASY else ("hard" if d >= DIFFICULTY_TAU_HARD else "medium")


def summarize(benchmark: str, rows: list[ExpressionResult], missing: MissingPolicy = "zero",
              reference_rounding: bool | None = None) -> dict[str, dict]:
    """Subset name -> {"J", "F", "J&F", ["R"], "n"} in percent, as the benchmark reports them."""
    scored = [r for r in rows if not (r.missing and missing == "skip")]
    if benchmark == "reasonseg":
        inters = [r.extra["intersection"] for r in scored]
        unions = [r.extra["union"] for r in scored]
        return {"overall": {"gIoU": 100 * giou(inters, unions), "cIoU": 100 * ciou(inters, unions),
                            "n": len(scored)}}
    if benchmark in ("revos", "synthetic"):
        rounding = (benchmark == "revos") if reference_rounding is None else reference_rounding
        ref = _subset([r for r in scored if r.type_id == 0], rounding)
        rea = _subset([r for r in scored if r.type_id == 1], rounding)
        overall = {k: (ref[k] + rea[k]) / 2 for k in ("J", "F", "J&F", "R") if k in ref and k in rea}
        overall["n"] = ref["n"] + rea["n"]
        out = {"referring": ref, "reasoning": rea, "overall": overall}
        if benchmark == "synthetic":
            out["all expressions"] = _subset(scored, False)
            for key, label in (("split", "split"), ("tier", "tier")):
                values = sorted({r.extra.get(key) for r in scored if r.extra.get(key) is not None}, key=str)
                for v in values:
                    out[f"{label} {v}"] = _subset([r for r in scored if r.extra.get(key) == v], False)
            for level in ("easy", "medium", "hard"):
                sel = [r for r in scored if difficulty_level(r.extra.get("difficulty")) == level]
                if sel:
                    out[f"difficulty {level}"] = _subset(sel, False)
        return out
    rounding = bool(reference_rounding)
    return {"overall": _subset(scored, rounding)}


# ----------------------------------------------------------------------------- Ref-DAVIS17


@dataclass
class DavisVideoResult:
    """One video, one annotator set: per matched ground-truth object, J/F statistics."""

    video: str
    annotator: int
    rows: list[dict]  # {"object", "exp_id", "J", "J_recall", "J_decay", "F", "F_recall", "F_decay"}
    missing: list[str]


def read_davis_unsupervised_gt(davis_root: Path, video: str) -> tuple[list[str], np.ndarray]:
    """DAVIS ``Annotations_unsupervised/480p/<video>/*.png`` -> (frame names, (T, H, W) uint8 ids)."""
    from videoseg_r1.data.base import DataRootError
    from videoseg_r1.masks import read_palette_png

    d = safe_join(Path(davis_root) / "Annotations_unsupervised" / "480p", video)
    if not d.is_dir():
        raise DataRootError(f"DAVIS unsupervised annotations not found: {d}")
    files = sorted(d.glob("*.png"))
    first = read_palette_png(files[0])
    ids = np.zeros((len(files), *first.shape), dtype=np.uint8)
    for t, p in enumerate(files):
        ids[t] = read_palette_png(p, first.shape)
    return [p.stem for p in files], ids


def score_davis_video(reader: BenchmarkReader, store: PredictionStore, video: str, annotator: int,
                      davis_root: Path | None = None, gt: tuple[list[str], np.ndarray] | None = None) -> DavisVideoResult:
    """DAVIS 2017 unsupervised evaluation of one annotator set of one video."""
    from scipy.optimize import linear_sum_assignment

    if gt is None:
        gt = read_davis_unsupervised_gt(davis_root, video) if davis_root else \
            (reader.frame_names(video), reader.id_maps(video))  # type: ignore[attr-defined]
    frames, ids = gt
    ids = ids.copy()
    void = ids == 255
    ids[void] = 0
    n_obj = int(ids[0].max())
    exps = sorted([e for e in reader.expressions(video) if e.extra.get("annotator") == annotator],
                  key=lambda e: e.extra.get("object_index", 0))
    combined = np.zeros(ids.shape, dtype=np.uint8)
    missing = []
    for rank in range(len(exps) - 1, -1, -1):  # lowest object index wins where masks overlap
        e = exps[rank]
        if not store.has(e):
            missing.append(e.key)
            continue
        combined[store.load(e, frames, ids.shape[1:])] = rank + 1
    if n_obj == 0:
        return DavisVideoResult(video, annotator, [], missing)
    n_prop = int(combined.max())
    if n_prop > DAVIS_MAX_PROPOSALS:
        raise PredictionError(f"{video}: {n_prop} proposals for annotator {annotator}, the DAVIS evaluation "
                              f"allows at most {DAVIS_MAX_PROPOSALS}")
    n_rows = max(n_prop, n_obj)
    t = ids.shape[0]
    j_res = np.zeros((n_rows, n_obj, t))
    f_res = np.zeros((n_rows, n_obj, t))
    gts = [ids == k for k in range(1, n_obj + 1)]
    for jj in range(n_rows):
        prop = combined == (jj + 1)
        for ii in range(n_obj):
            j_res[jj, ii], f_res[jj, ii] = jf(prop, gts[ii], void)
    cost = (np.mean(j_res, axis=2) + np.mean(f_res, axis=2)) / 2
    row_ind, col_ind = linear_sum_assignment(-cost)
    j_m, f_m = j_res[row_ind, col_ind, :], f_res[row_ind, col_ind, :]
    rows = []
    for ii in range(n_obj):
        js, fs = db_statistics(j_m[ii]), db_statistics(f_m[ii])
        prop = int(row_ind[ii])
        rows.append({"object": int(col_ind[ii]) + 1, "exp_id": exps[prop].exp_id if prop < len(exps) else "",
                     "J": js.mean, "J_recall": js.recall, "J_decay": js.decay,
                     "F": fs.mean, "F_recall": fs.recall, "F_decay": fs.decay})
    return DavisVideoResult(video, annotator, rows, missing)


def summarize_davis(results: list[DavisVideoResult]) -> dict[str, dict]:
    """Per annotator set and averaged: J, F, J&F means (percent), recalls and decays."""
    out: dict[str, dict] = {}
    sets = sorted({r.annotator for r in results})
    for a in sets:
        rows = [row for r in results if r.annotator == a for row in r.rows]
        s = {k: 100 * _mean([row[k] for row in rows]) for k in ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay")}
        s["J&F"] = (s["J"] + s["F"]) / 2
        s["n"] = len(rows)
        out[f"annotator {a}"] = s
    if sets:
        avg = {k: _mean([out[f"annotator {a}"][k] for a in sets]) for k in out[f"annotator {sets[0]}"] if k != "n"}
        avg["n"] = sum(out[f"annotator {a}"]["n"] for a in sets)
        out["overall"] = avg
    return out
