"""Negative-point reward (the paper's addition): a good negative point sits just outside the target.

Registered in ``REWARD_FUNCS``. Each training sample carries the union of its ground-truth masks at
the model input resolution as a COCO RLE JSON string in the ``gt_mask_rle`` column
(``videoseg_r1.training.samples`` writes it). Without that column the ground-truth boxes of
``solution`` stand in for the masks (filled rectangles).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from videoseg_r1.config import RewardConfig
from videoseg_r1.rewards.common import (
    column,
    completion_text,
    frame_size_of,
    gt_items,
    raw_negative_points,
)


@functools.lru_cache(maxsize=16)
def _l1_distance_map(mask_key: str) -> np.ndarray | None:
    """Taxicab distance (pixels) of every pixel to the nearest GT-mask pixel, (H, W) int32; 0 inside.

    ``mask_key`` is the RLE JSON string (cached: the G completions of a prompt share it).
    None when the mask is empty or unreadable.
    """
    from scipy.ndimage import distance_transform_cdt

    from videoseg_r1.masks import rle_decode

    try:
        mask = rle_decode(json.loads(mask_key))
    except Exception:
        return None
    if not mask.any():
        return None
    return distance_transform_cdt(~mask, metric="taxicab").astype(np.int32)


def _boxes_mask_key(boxes: list[list[float]], width: int, height: int) -> str | None:
    from videoseg_r1.masks import rle_encode

    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        xa, xb = sorted((int(round(x1)), int(round(x2))))
        ya, yb = sorted((int(round(y1)), int(round(y2))))
        mask[max(ya, 0) : min(yb, height - 1) + 1, max(xa, 0) : min(xb, width - 1) + 1] = True
    return json.dumps(rle_encode(mask)) if mask.any() else None


def l1_distance_to_mask(point_xy: tuple[float, float], distance_map: np.ndarray) -> float:
    """Minimum taxicab distance from ``point_xy`` to the mask behind ``distance_map``.

    The point is rounded to its pixel; a point outside the frame adds its (exact, for taxicab)
    distance to the frame.
    """
    h, w = distance_map.shape
    x, y = float(point_xy[0]), float(point_xy[1])
    xi, yi = int(round(x)), int(round(y))
    xc, yc = min(max(xi, 0), w - 1), min(max(yi, 0), h - 1)
    return float(distance_map[yc, xc]) + abs(xi - xc) + abs(yi - yc)


def negative_point_score(
    text: str, mask_key: str | None, width: int, height: int, config: RewardConfig | None = None
) -> float:
    """0..1 for one completion; see :func:`negative_point`."""
    config = (config or RewardConfig()).for_frame(width, height)
    if not mask_key:
        return 0.0
    distance_map = _l1_distance_map(mask_key)
    if distance_map is None:
        return 0.0
    negatives = raw_negative_points(text, config.max_items)
    if not negatives:
        return 0.0
    good = 0
    for point in negatives:
        d = l1_distance_to_mask(point, distance_map)
        if 0 < d <= config.negative_point_max_l1_px:
            good += 1
    return good / len(negatives)


def negative_point(
    completions: list[Any],
    solution: list[Any] | None = None,
    *,
    reward_config: RewardConfig | None = None,
    **columns: Any,
) -> list[float]:
    """Negative-point reward (0..1): negative points just outside the ground-truth masks.

    For each predicted ``neg_point_2d``, read raw like the accuracy reward reads its answer (first
    ``<answer>`` block, ``json.loads``; the point as written, not clipped to the frame), d = its
    minimum L1 (taxicab) distance in pixels to the union of the ground-truth masks (0 inside a mask;
    a point past the border adds its distance to the frame). Each point with
    0 < d <= 40 px earns 1 / (number of predicted negative points). No negative point -> 0. The
    40 px are for an 840x840 input and scale with sqrt(W·H) / 840 of the ``frame_size`` column
    (``RewardConfig.for_frame``).

    Worked example (GT mask = the square x, y in [100, 199])::

        neg point [205, 150]: d = 6          -> 1.0
        neg point [150, 150]: inside, d = 0  -> 0.0
        neg points [205, 150] and [300, 300]: d = 6 and 202 -> 0.5
        neg point [240, 150]: d = 41 > 40    -> 0.0
        GT mask x, y in [0, 99], neg point [-5, 50]: d = 6 (not clipped to x = 0, d = 0) -> 1.0
    """
    n = len(completions)
    solutions = solution if solution is not None else [None] * n
    masks = column(columns, "gt_mask_rle", n)
    out = []
    for i, completion in enumerate(completions):
        try:
            width, height = frame_size_of(columns, i)
            key = masks[i]
            if not key:
                gt = gt_items(solutions[i])
                key = _boxes_mask_key(gt[0], width, height) if gt else None
            out.append(negative_point_score(completion_text(completion), key, width, height, reward_config))
        except Exception:  # a reward never raises
            out.append(0.0)
    return out
