"""Segmentation metrics, pure and vectorised: J, F (DAVIS 2017), statistics, ReVOS robustness R, gIoU/cIoU.

Every protocol in ``videoseg_r1.eval.protocols`` (and the reward code) imports these; there is one J and
one F in the project. The numbers equal the official scripts' (davis2017-evaluation ``db_eval_iou`` /
``db_eval_boundary`` / ``db_statistics``, the ReVOS ``get_r2vos_robustness``, LISA's gIoU/cIoU) to
floating-point identity, checked against a per-frame reference in ``benchmarks/bench_eval.py``.

Conventions (shapes: T frames, H rows, W columns; masks are bool or anything whose non-zero means
foreground):

* ``region_similarity(pred, gt)`` = J: |pred ∩ gt| / |pred ∪ gt| per frame, 1 where the union is empty.
* ``contour_accuracy(pred, gt)`` = F: boundary maps one pixel wide (a pixel is on the boundary when it
  differs from its right, lower or lower-right neighbour; the last row / column compare with their one
  remaining neighbour, the bottom-right pixel never is), each boundary dilated by a disk of radius
  ``ceil(0.008 * image diagonal)`` px, precision / recall of matched boundary pixels, F = 2PR/(P+R).
  Empty boundaries: none on either side -> F = 1; only one side empty -> F = 0. (A constant mask, all
  0 or all 1, has an empty boundary.)
* Both accept (H, W) -> float or (T, H, W) -> float64 array of T values; ``jf`` returns both at once.

How F is fast: each block of frames is first cropped to the window holding all foreground of both
masks plus a one-pixel margin (exact, see ``content_window``); inside it, prediction and ground truth
are bit-packed along W into 64-bit words (64 pixels per word) and stacked, so every word operation runs
once for both. The boundary map is computed with word shifts, and the disk dilation is the union over
rows dy in [-r, r] of horizontal dilations by half-width floor(sqrt(r^2 - dy^2)), the levels grown by
doubling steps on the flattened words (see the kernels' comment). Counting is a popcount. The integer
counts equal the reference's, and the float arithmetic is done in the same order, so the results are
bitwise the reference's. The evaluator's streaming path (``eval/windows.py``) cuts the windows out of
RLE runs and PNG frames itself and calls ``jf_in_window``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np

DEFAULT_BOUND_TH = 0.008  # DAVIS: boundary tolerance as a fraction of the image diagonal
_CHUNK_FRAMES = 8  # frames per block: the block is cropped to its content box, small blocks crop tighter

__all__ = [
    "DEFAULT_BOUND_TH", "boundary_radius", "disk", "seg2bmap", "region_similarity", "contour_accuracy", "jf",
    "Stats", "db_statistics", "robustness", "robustness_from_counts", "parity_false_positives",
    "content_window", "jf_in_window", "RobustnessMode", "FrameCounts", "iou_counts", "giou", "ciou",
]


# ----------------------------------------------------------------------------- helpers


def _as_bool(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != bool:
        x = x != 0
    return x


def _check_pair(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    pred = _as_bool(pred, "pred")
    gt = _as_bool(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (T, H, W), got shape {pred.shape}")
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
    if void is not None:
        void = _as_bool(void, "void")
        if void.ndim == 2 and not single:
            void = np.broadcast_to(void, pred.shape)
        elif single:
            void = void.reshape(pred.shape)
        if void.shape != pred.shape:
            raise ValueError(f"void mask shape {void.shape} does not match mask shape {pred.shape}")
    return pred, gt, void, single


def boundary_radius(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"an absolute boundary tolerance must be a whole number of pixels, got {bound_th}")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element, (2r+1, 2r+1) uint8: 1 where dx^2 + dy^2 <= r^2 (skimage's ``disk``)."""
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    return (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a mask, (H, W) or (T, H, W) bool -> same shape bool (DAVIS ``_seg2bmap``).

    Plain numpy (used by tests and as documentation); the metrics use the bit-packed equivalent.
    """
    seg = _as_bool(seg, "seg")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


# ----------------------------------------------------------------------------- bit-packed kernels
# A packed array has shape (T, H, NW) uint64; pixel x of a row is bit (x % 64) of word x // 64, and
# every row ends in a tail of at least ``pad`` zero bits (W + pad <= 64 * NW). The horizontal shifts
# work on the flattened array, all rows as one bit string: whole-array operations on long contiguous
# runs are several times faster than per-row slices of a few words. A shift by k <= pad only moves
# bits between a row and the neighbouring tails, never onto another row's pixels; tail bits that pick
# something up are cleared (boundary maps) or never counted (dilations are only ANDed with boundary
# maps, whose tails are zero).


def _pack(masks: np.ndarray, pad: int = 0) -> np.ndarray:
    """(T, H, W) masks (non-zero = 1) -> (T, H, NW) uint64, NW = ceil((W + pad) / 64)."""
    t, h, w = masks.shape
    nbytes = (w + 7) // 8
    nw = (w + pad + 63) // 64
    packed = np.packbits(masks, axis=-1, bitorder="little")
    if nbytes != nw * 8:
        buf = np.zeros((t, h, nw * 8), dtype=np.uint8)
        buf[..., :nbytes] = packed
        packed = buf
    words = packed.view("<u8")
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        words = words.astype(np.uint64)
    return words


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per frame of a (T, H, NW) packed array -> (T,) int64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).sum(axis=(1, 2), dtype=np.int64)
    # numpy < 2.0: byte lookup table
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)  # pragma: no cover
    return table[words.view(np.uint8)].sum(axis=(1, 2), dtype=np.int64)  # pragma: no cover


def _next_pixel(a: np.ndarray) -> np.ndarray:
    """out[x] = a[x + 1] along the flattened bit string (needs a tail of >= 1 bit)."""
    f = a.reshape(-1)
    out = f >> np.uint64(1)
    out[:-1] |= f[1:] << np.uint64(63)
    return out.reshape(a.shape)


def _grow(f: np.ndarray, k: int) -> np.ndarray:
    """out[x] = f[x - k] | f[x] | f[x + k] on a flat packed bit string, 0 < k < 64."""
    out = f << np.uint64(k)
    out |= f
    out |= f >> np.uint64(k)
    carry = np.uint64(64 - k)
    out[1:] |= f[:-1] >> carry
    out[:-1] |= f[1:] << carry
    return out


def _packed_boundary(p: np.ndarray, width: int) -> np.ndarray:
    """Bit-packed ``seg2bmap``: (T, H, NW) with a tail of >= 1 bit -> (T, H, NW), tails zero."""
    e = _next_pixel(p)
    s = np.zeros_like(p)
    s[:, :-1] = p[:, 1:]
    se = _next_pixel(s)
    b = (p ^ e) | (p ^ s)
    b |= p ^ se
    b[:, -1] = p[:, -1] ^ e[:, -1]
    wl, bit = divmod(width - 1, 64)
    last = np.uint64(1 << bit)
    col = (p[..., wl] ^ s[..., wl]) & last
    b[..., wl] = (b[..., wl] & ~last) | col
    b[:, -1, wl] &= ~last
    row = np.zeros(p.shape[-1], dtype=np.uint64)  # the row's pixels: clear what was shifted into the tail
    row[:wl] = ~np.uint64(0)
    row[wl] = np.uint64((1 << (bit + 1)) - 1)
    b &= row
    return b


def _disk_widths(radius: int) -> list[int]:
    """Half-width of the disk's row at |dy| = 0..r: floor(sqrt(r^2 - dy^2))."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]


def _packed_dilate(b: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a packed map whose rows have tails of >= ``radius`` bits by ``disk(radius)`` (cv2.dilate
    semantics: nothing enters from outside; the tails receive garbage).

    The disk is the union over rows dy of horizontal segments of half-width w(dy) (``_disk_widths``):
    each distinct half-width is a horizontal dilation level, grown from the previous level by steps of
    at most 2 * (current half-width) + 1 so the segment stays contiguous (0 -> 1 -> 3 -> 5 -> ... in
    a handful of whole-array word operations), then every row ORs in its neighbours' levels.
    """
    widths = _disk_widths(radius)
    t, h, nw = b.shape
    levels = {0: b}
    cur, have = b.reshape(-1), 0
    for wd in sorted(set(widths)):
        while have < wd:
            step = min(wd - have, 2 * have + 1, 63)
            cur = _grow(cur, step)
            have += step
        levels[wd] = cur.reshape(b.shape)
    out = levels[widths[0]].copy()
    for dy in range(1, min(radius, h - 1) + 1):
        row = levels[widths[dy]]
        out[:, :-dy] |= row[:, dy:]  # out[y] |= row[y + dy]
        out[:, dy:] |= row[:, :-dy]  # out[y] |= row[y - dy]
    return out


def _f_from_counts(n_fg: np.ndarray, n_gt: np.ndarray, fg_match: np.ndarray, gt_match: np.ndarray) -> np.ndarray:
    """DAVIS precision / recall / F from integer counts, elementwise, in the reference's float order."""
    n_fg = n_fg.astype(np.int64)
    n_gt = n_gt.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_fg > 0, fg_match / n_fg.astype(np.float64), 0.0)
        recall = np.where(n_gt > 0, gt_match / n_gt.astype(np.float64), 0.0)
    precision = np.where((n_fg == 0) & (n_gt > 0), 1.0, precision)
    recall = np.where((n_fg == 0) & (n_gt > 0), 0.0, recall)
    precision = np.where((n_fg > 0) & (n_gt == 0), 0.0, precision)
    recall = np.where((n_fg > 0) & (n_gt == 0), 1.0, recall)
    both_empty = (n_fg == 0) & (n_gt == 0)
    precision = np.where(both_empty, 1.0, precision)
    recall = np.where(both_empty, 1.0, recall)
    denom = precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(denom == 0, 0.0, 2 * precision * recall / denom)
    return f.astype(np.float64)


def _jf_chunk(pred: np.ndarray, gt: np.ndarray, radius: int, want_j: bool, want_f: bool,
              counts: list | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """J and F of (K, h, w) masks (non-zero = foreground). Prediction and ground truth are packed into
    one (2K, h, NW) array so each word operation below runs once for both."""
    k, _, w = pred.shape
    pad = max(radius, 1) if want_f else 0
    pg = np.concatenate([_pack(pred, pad), _pack(gt, pad)])
    p, g = pg[:k], pg[k:]
    j = f = None
    if want_j:
        n = _popcount(pg)
        inter = _popcount(p & g)
        union = n[:k] + n[k:] - inter
        if counts is not None:
            counts.append((n[:k], n[k:], inter))
        with np.errstate(divide="ignore", invalid="ignore"):
            j = inter / union
        j[np.isclose(union, 0)] = 1
    if want_f:
        bpg = _packed_boundary(pg, w)
        n = _popcount(bpg)
        n_fg, n_gt = n[:k], n[k:]
        fg_match = np.zeros(k, dtype=np.int64)
        gt_match = np.zeros(k, dtype=np.int64)
        both = np.flatnonzero((n_fg > 0) & (n_gt > 0))  # only these frames need the dilation
        if both.size:
            sub = bpg if both.size == k else bpg[np.concatenate([both, both + k])]
            dil = _packed_dilate(sub, radius)
            m = both.size
            fg_match[both] = _popcount(sub[:m] & dil[m:])
            gt_match[both] = _popcount(sub[m:] & dil[:m])
        f = _f_from_counts(n_fg, n_gt, fg_match, gt_match)
    return j, f


def content_window(y0: int, y1: int, x0: int, x1: int, height: int, width: int) -> tuple[slice, slice]:
    """The window on which J and F equal their full-frame values, for masks whose foreground (both
    masks, every frame of the block) lies in rows y0..y1 and columns x0..x1 (inclusive): those bounds
    plus a one-pixel margin on every side, clipped to the image.

    Every boundary pixel lies in [y0 - 1, y1] x [x0 - 1, x1]; the extra zero row / column below and to
    the right make the window's own last-row / last-column rule give the full image's values; the
    dilation only ever reads boundary pixels, which are all inside. So J and F on the window equal J and
    F on the full frames (the radius still comes from the full image size).
    """
    return slice(max(y0 - 1, 0), min(y1 + 2, height)), slice(max(x0 - 1, 0), min(x1 + 2, width))


def _content_box(p: np.ndarray, g: np.ndarray) -> tuple[slice, slice] | None:
    """``content_window`` of a block of dense masks, or None if both are empty in every frame."""
    _, h, w = p.shape
    rows = p.any(axis=2).any(axis=0) | g.any(axis=2).any(axis=0)
    ys = np.flatnonzero(rows)
    if ys.size == 0:
        return None
    y0, y1 = int(ys[0]), int(ys[-1])
    cols = p[:, y0:y1 + 1].any(axis=1).any(axis=0) | g[:, y0:y1 + 1].any(axis=1).any(axis=0)
    xs = np.flatnonzero(cols)
    return content_window(y0, y1, int(xs[0]), int(xs[-1]), h, w)


@dataclass(frozen=True)
class FrameCounts:
    """Pixel counts per frame, each (T,) int64: prediction, ground truth, their intersection."""

    pred: np.ndarray
    gt: np.ndarray
    inter: np.ndarray


def jf_in_window(pred: np.ndarray, gt: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, FrameCounts]:
    """J, F (each (K,)) and the pixel counts of (K, h, w) masks cut out of full frames by
    ``content_window`` (non-zero = foreground, any integer or bool dtype), with the dilation radius of
    the full frames (``boundary_radius``). The evaluator's streaming path calls this on windows it
    decoded itself; ``jf`` on dense masks does the same after finding the window."""
    parts: list = []
    j, f = _jf_chunk(pred, gt, radius, True, True, parts)
    return j, f, FrameCounts(*(np.asarray(x, dtype=np.int64) for x in parts[0]))


def _jf_impl(pred, gt, void, bound_th, want_j, want_f, counts: list | None = None):
    pred, gt, void, single = _check_pair(pred, gt, void)
    t, h, w = pred.shape
    radius = boundary_radius(h, w, bound_th)
    js, fs = [], []
    for s in range(0, t, _CHUNK_FRAMES):
        sl = slice(s, s + _CHUNK_FRAMES)
        p, g = pred[sl], gt[sl]
        v = None if void is None else void[sl]
        if v is not None:  # void pixels belong to neither mask (DAVIS multiplies them out first)
            p, g, v = p & ~v, g & ~v, None
        box = _content_box(p, g)
        if box is None:  # both masks empty in every frame: J = F = 1
            n = p.shape[0]
            js.append(np.ones(n))
            fs.append(np.ones(n))
            if counts is not None:
                z = np.zeros(n, dtype=np.int64)
                counts.append((z, z, z))
            continue
        ys, xs = box
        j, f = _jf_chunk(p[:, ys, xs], g[:, ys, xs], radius, want_j, want_f, counts)
        js.append(j)
        fs.append(f)
    j = np.concatenate(js) if want_j and js else (np.zeros(0) if want_j else None)
    f = np.concatenate(fs) if want_f and fs else (np.zeros(0) if want_f else None)
    if single:
        j = None if j is None else float(j[0])
        f = None if f is None else float(f[0])
    return j, f


# ----------------------------------------------------------------------------- public J / F


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None):
    """J (mask IoU): (H, W) -> float, (T, H, W) -> (T,) float64. Empty union -> 1.

    ``void`` (same shape, or (H, W) for all frames): pixels excluded from both masks (DAVIS 255).
    """
    return _jf_impl(pred, gt, void, DEFAULT_BOUND_TH, True, False)[0]


def contour_accuracy(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None,
                     bound_th: float = DEFAULT_BOUND_TH):
    """F (DAVIS boundary F-measure): (H, W) -> float, (T, H, W) -> (T,) float64.

    ``bound_th`` < 1 is a fraction of the diagonal (radius = ceil(bound_th * diag)), >= 1 pixels.
    """
    return _jf_impl(pred, gt, void, bound_th, False, True)[1]


def jf(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = DEFAULT_BOUND_TH,
       return_counts: bool = False):
    """(J, F) together, packing each mask once: (T, H, W) -> ((T,), (T,)); (H, W) -> (float, float).

    ``return_counts=True`` adds a third item, ``FrameCounts`` (per-frame pixel counts of pred, gt and
    their intersection, void excluded), which the ReVOS R reuses instead of another pass.
    """
    if not return_counts:
        return _jf_impl(pred, gt, void, bound_th, True, True)
    parts: list = []
    j, f = _jf_impl(pred, gt, void, bound_th, True, True, parts)
    cat = [np.concatenate([p[i] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64) for i in range(3)]
    return j, f, FrameCounts(*cat)


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """DAVIS per-object statistics of per-frame values: mean, recall (fraction > 0.5), decay."""

    mean: float
    recall: float
    decay: float


def decay_bins(num_frames: int, n_bins: int = 4) -> list[tuple[int, int]]:
    """DAVIS decay bins as (start, stop) slices: ids = round(linspace(1, T, 5) + 1e-10) - 1, bin i is
    values[ids[i] : ids[i+1] + 1] (neighbouring bins share an end frame). 64-bit indices, so videos
    longer than 255 frames are binned correctly (the reference casts to uint8 and wraps)."""
    ids = (np.round(np.linspace(1, num_frames, n_bins + 1) + 1e-10) - 1).astype(np.int64)
    return [(int(ids[i]), int(ids[i + 1]) + 1) for i in range(n_bins)]


def db_statistics(per_frame_values: Sequence[float] | np.ndarray) -> Stats:
    """Mean, recall (> 0.5) and decay (mean of the first quarter minus mean of the last) of per-frame
    values, NaNs ignored, as ``davis2017.utils.db_statistics``."""
    v = np.asarray(per_frame_values, dtype=np.float64)
    if v.size == 0:
        return Stats(float("nan"), float("nan"), float("nan"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        bins = [v[a:b] for a, b in decay_bins(len(v))]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return Stats(float(mean), float(recall), float(decay))


# ----------------------------------------------------------------------------- ReVOS robustness

RobustnessMode = Literal["parity", "corrected"]


def robustness(pred: np.ndarray, gt_instances: Sequence[np.ndarray] | np.ndarray, foreground: np.ndarray,
               mode: RobustnessMode = "parity", pred_value: int = 1) -> np.ndarray:
    """ReVOS robustness per frame: max(0, 1 - false-positive pixels / annotated foreground pixels).

    pred: (T, H, W) bool. gt_instances: the expression's target masks, a sequence of (T, H, W) bool,
    one per listed annotation (repeats count, as in the reference). foreground: (T, H, W) bool/int, all
    annotated objects of the video (``mask_dict_foreground.json``). Returns (T,) float64.

    ``mode="parity"`` (default) reproduces the reference ReVOS script bit for bit: it adds the targets'
    masks into a uint8 map, so a pixel covered by k >= 2 targets holds k, and computes the false
    positives as sum(uint8(1 - gt) * pred) in uint8. A correctly predicted pixel covered by two
    targets then counts as 255 false positives (1 - 2 wraps to 255). The prediction enters with its
    pixel value; ``pred_value`` is that value for foreground (1 for 0/1 masks; a 0/255 PNG read by the
    reference with cv2 gives 255, which multiplies every false positive by 255). The denominator is
    ``foreground.sum() + 1e-6``.

    ``mode="corrected"``: false positives = |pred \\ union(targets)|, exact division; a frame with no
    annotated foreground scores 1 if nothing is predicted, else 0. Equal to parity whenever the
    targets do not overlap and ``pred_value`` is 1 (up to the 1e-6).
    """
    pred = _as_bool(pred, "pred")
    fg = np.asarray(foreground)
    if pred.ndim != 3 or fg.shape != pred.shape:
        raise ValueError(f"robustness needs (T, H, W) masks of one shape, got {pred.shape} and {fg.shape}")
    inst = [_as_bool(m, "gt") for m in (gt_instances if not isinstance(gt_instances, np.ndarray) or
                                         gt_instances.ndim == 4 else [gt_instances])]
    for m in inst:
        if m.shape != pred.shape:
            raise ValueError(f"target mask shape {m.shape} does not match prediction shape {pred.shape}")
    # The reference sums the foreground map's values (0/1 for ReVOS's merged masks).
    pos = np.count_nonzero(fg, axis=(1, 2)).astype(np.int64) if fg.dtype == bool else \
        fg.astype(np.int64).sum(axis=(1, 2))
    union = np.zeros(pred.shape, dtype=bool) if not inst else inst[0].copy()
    overlap = False
    for m in inst[1:]:
        if not overlap and np.logical_and(union, m).any():
            overlap = True
        union |= m
    if mode == "corrected":
        return robustness_from_counts(np.count_nonzero(pred & ~union, axis=(1, 2)), pos, "corrected")
    if mode != "parity":
        raise ValueError(f"unknown robustness mode {mode!r} (parity or corrected)")
    v = np.uint8(pred_value & 0xFF)
    if not overlap:
        # no pixel is covered twice: uint8(1 - gt) is 1 off-target and 0 on it, so the product is v
        # exactly on the false positives
        neg = np.count_nonzero(pred & ~union, axis=(1, 2)).astype(np.int64) * np.int64(v)
    else:
        neg = parity_false_positives(pred, inst, pred_value)
    return robustness_from_counts(neg, pos, "parity")


def parity_false_positives(pred: np.ndarray, gt_instances: Sequence[np.ndarray], pred_value: int = 1) -> np.ndarray:
    """The reference ReVOS script's false-positive count per frame, (T,) int64, in its uint8 arithmetic:
    sum(uint8(1 - sum of the target masks) * pred * pred_value) (see ``robustness``). pred and each
    target: (T, H, W) bool. Only pixels where pred is set contribute, so a window holding all of the
    prediction gives the full frames' counts."""
    v = np.uint8(pred_value & 0xFF)
    count = np.zeros(pred.shape, dtype=np.uint8)
    for m in gt_instances:
        count += np.asarray(m, dtype=bool).view(np.uint8)
    prod = (np.uint8(1) - count) * (np.asarray(pred, dtype=bool).view(np.uint8) * v)
    return prod.sum(axis=(1, 2), dtype=np.uint64).astype(np.int64)


def robustness_from_counts(neg: np.ndarray, pos: np.ndarray, mode: RobustnessMode = "parity") -> np.ndarray:
    """R per frame from false-positive counts ``neg`` and foreground counts ``pos``, both (T,) ints,
    with each mode's arithmetic (see ``robustness``)."""
    neg = np.asarray(neg, dtype=np.int64)
    pos = np.asarray(pos, dtype=np.int64)
    if mode == "corrected":
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(pos > 0, 1.0 - neg / np.maximum(pos, 1).astype(np.float64), np.where(neg == 0, 1.0, 0.0))
        return np.maximum(r, 0.0)
    r = 1 - neg.astype(np.float64) / (pos.astype(np.float64) + 1e-6)
    return np.maximum(r, 0.0)


# ----------------------------------------------------------------------------- image metrics


def iou_counts(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """(intersection, union) pixel counts of one image's foreground, (H, W); ``ignore`` pixels
    (ReasonSeg's 255 regions) are excluded from both, as LISA's ``intersectionAndUnionGPU``."""
    pred = _as_bool(pred, "pred")
    gt = _as_bool(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}")
    if ignore is not None:
        keep = ~_as_bool(ignore, "ignore")
        pred = pred & keep
        gt = gt & keep
    inter = int(np.count_nonzero(pred & gt))
    union = int(np.count_nonzero(pred | gt))
    return inter, union


def giou(intersections: Iterable[int], unions: Iterable[int], eps: float = 1e-5) -> float:
    """gIoU: mean over images of inter / (union + eps), an image with an empty union scoring 1
    (LISA's convention, including its eps = 1e-5; pass eps=0 for the plain ratio)."""
    i = np.asarray(list(intersections), dtype=np.float64)
    u = np.asarray(list(unions), dtype=np.float64)
    if i.size == 0:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(u == 0, 1.0, i / (u + eps))
    return float(per.mean())


def ciou(intersections: Iterable[int], unions: Iterable[int], eps: float = 1e-10) -> float:
    """cIoU: total intersection / (total union + eps) over all images (LISA's eps = 1e-10)."""
    i = float(np.sum(np.asarray(list(intersections), dtype=np.float64)))
    u = float(np.sum(np.asarray(list(unions), dtype=np.float64)))
    return i / (u + eps)
