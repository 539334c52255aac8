"""Accuracy reward: Hungarian-matched box/point criteria against the ground truth (SPEC §2).

Registered in ``REWARD_FUNCS``. The predicted items are read by THE parser
(``videoseg_r1.reasoning.parsing``), the same reading inference uses; the matching lives in
``videoseg_r1.rewards.matching``.
"""

from __future__ import annotations

import math
from typing import Any

from videoseg_r1.config import RewardConfig
from videoseg_r1.rewards.common import (
    completion_text,
    frame_size_of,
    gt_items,
    predicted_items,
)
from videoseg_r1.rewards.matching import match_items

_NAN2 = (math.nan, math.nan)
_NAN4 = (math.nan, math.nan, math.nan, math.nan)


def accuracy_score(text: str, solution: Any, width: int, height: int, config: RewardConfig | None = None) -> float:
    """Accuracy (0..3) of one completion against one ``solution`` (JSON list of GT items)."""
    config = (config or RewardConfig()).for_frame(width, height)
    gt = gt_items(solution)
    if gt is None:
        return 0.0
    items = predicted_items(text, width, height, config.max_items)
    pred_boxes = [item.box_xyxy if item.box_xyxy is not None else _NAN4 for item in items]
    pred_points = [item.point_xy if item.point_xy is not None else _NAN2 for item in items]
    result = match_items(
        pred_boxes,
        pred_points,
        gt[0],
        gt[1],
        iou_threshold=config.iou_threshold,
        box_l1_threshold_px=config.box_l1_threshold_px,
        point_distance_threshold_px=config.point_distance_threshold_px,
        max_items=config.max_items,
    )
    return result.reward


def accuracy(
    completions: list[Any],
    solution: list[Any] | None = None,
    *,
    reward_config: RewardConfig | None = None,
    **columns: Any,
) -> list[float]:
    """Accuracy reward (0..3): K predicted items vs N ground-truth items, optimally matched.

    For each (prediction, ground truth) pair three binary criteria, each worth 1: box IoU > 0.5
    (inclusive pixels), mean |Δ| of the four box coordinates < 10 px, and point distance < 30 px with
    the predicted point inside its own predicted box. The Hungarian algorithm picks the one-to-one
    assignment with the most criteria met; reward = Σ matched criteria / max(K, N). K and N are capped
    at 120. Thresholds come from ``RewardConfig``; ``frame_size`` (W, H) column, default 840x840,
    is the frame the parser clips to, and the 10 / 30 px thresholds scale with sqrt(W·H) / 840
    (``RewardConfig.for_frame``: at 224x224 they are 2.67 / 8 px).

    Worked example (GT ``[{"bbox_2d": [10, 10, 109, 109], "point_2d": [60, 60]}]``)::

        exact box and point                                   -> 3.0
        box shifted by 12 px in x: IoU = 88·100/(2·10000 − 8800) = 0.786 > 0.5 but
          mean |Δ| = 12 ≥ 10; point [70, 60] at distance 10 inside the box  -> 2.0
        right answer plus one spurious item: 3 / max(2, 1)     -> 1.5
        "<answer>not json</answer>"                           -> 0.0
    """
    n = len(completions)
    solutions = solution if solution is not None else [None] * n
    out = []
    for i, completion in enumerate(completions):
        try:
            width, height = frame_size_of(columns, i)
            out.append(accuracy_score(completion_text(completion), solutions[i], width, height, reward_config))
        except Exception:  # a reward never raises
            out.append(0.0)
    return out


__all__ = ["accuracy", "accuracy_score"]
