"""Box/point geometry and the one-to-one matching behind the accuracy reward (SPEC §2).

Called by ``videoseg_r1.rewards.accuracy`` (and usable by evaluation code that wants the same
matching). Pure NumPy/SciPy: arrays in, numbers out. Boxes are ``(x1, y1, x2, y2)`` in pixels and
*inclusive* of their last pixel, so a box's area is ``(x2 - x1 + 1) * (y2 - y1 + 1)`` (VisionReasoner's
convention). Missing values are NaN: every comparison with NaN is False, so an item without a box
earns neither the IoU nor the L1 criterion and an item without a point earns no point criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: VisionReasoner caps both the predicted (K) and the ground-truth (N) list at 120 items.
MAX_MATCH_ITEMS = 120


def _as_2d(values, width: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width), dtype=np.float64)
    return arr.reshape(-1, width)


def box_iou_matrix(boxes_a_xyxy, boxes_b_xyxy) -> np.ndarray:
    """IoU of every box in ``a`` (K, 4) with every box in ``b`` (N, 4), inclusive pixels -> (K, N).

    Example: ``[0, 0, 9, 9]`` (100 px) vs ``[5, 0, 14, 9]`` (100 px) overlap in 5x10 = 50 px, so
    IoU = 50 / (100 + 100 - 50) = 1/3.
    """
    a = _as_2d(boxes_a_xyxy, 4)
    b = _as_2d(boxes_b_xyxy, 4)
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))  # (K, 1)
    bx1, by1, bx2, by2 = (b[:, i][None, :] for i in range(4))  # (1, N)
    inter_w = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + 1, 0, None)
    inter_h = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1) + 1, 0, None)
    inter = inter_w * inter_h
    area_a = np.clip(ax2 - ax1 + 1, 0, None) * np.clip(ay2 - ay1 + 1, 0, None)
    area_b = np.clip(bx2 - bx1 + 1, 0, None) * np.clip(by2 - by1 + 1, 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    iou[np.isnan(inter) | np.isnan(union)] = np.nan
    return iou


def box_l1_matrix(boxes_a_xyxy, boxes_b_xyxy) -> np.ndarray:
    """Mean absolute difference of the four box coordinates, (K, 4) x (N, 4) -> (K, N) pixels."""
    a = _as_2d(boxes_a_xyxy, 4)
    b = _as_2d(boxes_b_xyxy, 4)
    return np.abs(a[:, None, :] - b[None, :, :]).mean(axis=2)


def point_distance_matrix(points_a_xy, points_b_xy) -> np.ndarray:
    """Euclidean distance of every point in ``a`` (K, 2) to every point in ``b`` (N, 2) -> (K, N)."""
    a = _as_2d(points_a_xy, 2)
    b = _as_2d(points_b_xy, 2)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def points_in_boxes(points_xy, boxes_xyxy) -> np.ndarray:
    """Whether point i lies inside box i (borders included), (K, 2) and (K, 4) -> (K,) bool."""
    p = _as_2d(points_xy, 2)
    b = _as_2d(boxes_xyxy, 4)
    return (p[:, 0] >= b[:, 0]) & (p[:, 0] <= b[:, 2]) & (p[:, 1] >= b[:, 1]) & (p[:, 1] <= b[:, 3])


@dataclass
class MatchResult:
    """Outcome of :func:`match_items`.

    ``criteria``: (K, N) number of criteria met (0..3) per pair; ``pred_idx``/``gt_idx``: the matched
    pairs; ``reward`` = sum over matched pairs of criteria met / max(K, N) (0 when K = N = 0).
    """

    criteria: np.ndarray
    pred_idx: np.ndarray
    gt_idx: np.ndarray
    reward: float


def match_items(
    pred_boxes_xyxy,
    pred_points_xy,
    gt_boxes_xyxy,
    gt_points_xy,
    *,
    iou_threshold: float = 0.5,
    box_l1_threshold_px: float = 10.0,
    point_distance_threshold_px: float = 30.0,
    max_items: int = MAX_MATCH_ITEMS,
) -> MatchResult:
    """Hungarian matching of K predicted items to N ground-truth items (VisionReasoner's accuracy).

    Per pair three binary criteria: box IoU > ``iou_threshold``; mean |Δ| of the box coordinates
    < ``box_l1_threshold_px``; point distance < ``point_distance_threshold_px`` **and** the predicted
    point inside its own predicted box. Cost = 3 − criteria met; the optimal one-to-one assignment
    comes from ``scipy.optimize.linear_sum_assignment``; reward = Σ matched (3 − cost) / max(K, N).
    Both lists are truncated to their first ``max_items`` entries.

    Example: one perfect prediction against two ground-truth objects -> 3 / max(1, 2) = 1.5.
    """
    from scipy.optimize import linear_sum_assignment

    pb = _as_2d(pred_boxes_xyxy, 4)[:max_items]
    pp = _as_2d(pred_points_xy, 2)[:max_items]
    gb = _as_2d(gt_boxes_xyxy, 4)[:max_items]
    gp = _as_2d(gt_points_xy, 2)[:max_items]
    if len(pb) != len(pp) or len(gb) != len(gp):
        raise ValueError("boxes and points must come in pairs (one box and one point per item)")
    k, n = len(pb), len(gb)
    if k == 0 or n == 0:
        empty = np.zeros((k, n))
        return MatchResult(empty, np.zeros(0, int), np.zeros(0, int), 0.0)
    with np.errstate(invalid="ignore"):
        iou_ok = box_iou_matrix(pb, gb) > iou_threshold
        l1_ok = box_l1_matrix(pb, gb) < box_l1_threshold_px
        point_ok = (point_distance_matrix(pp, gp) < point_distance_threshold_px) & points_in_boxes(pp, pb)[:, None]
    criteria = iou_ok.astype(np.float64) + l1_ok + point_ok
    rows, cols = linear_sum_assignment(3.0 - criteria)
    reward = float(criteria[rows, cols].sum() / max(k, n))
    return MatchResult(criteria, rows, cols, reward)
