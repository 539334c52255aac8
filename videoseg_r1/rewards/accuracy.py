"""Accuracy reward: Hungarian-matched box/point criteria against the ground truth (SPEC §2).

Registered in ``REWARD_FUNCS``. The answer is judged as written, as VisionReasoner's accuracy reward
does (``vision_reasoner_accuracy_reward`` in Seg-Zero's ``verl/utils/reward_score/vision_reasoner.py``):
the first ``<answer>`` block through ``json.loads``, every item's ``bbox_2d`` and ``point_2d`` taken
without reordering or clipping (``rewards.common.raw_boxes_points``). The tolerant parser of
inference is NOT used here. The matching lives in ``videoseg_r1.rewards.matching``.
"""

from __future__ import annotations

from typing import Any

from videoseg_r1.config import RewardConfig
from videoseg_r1.rewards.common import (
    completion_text,
    frame_size_of,
    gt_items,
    raw_boxes_points,
)
from videoseg_r1.rewards.matching import match_items


def accuracy_score(text: str, solution: Any, width: int, height: int, config: RewardConfig | None = None) -> float:
    """Accuracy (0..3) of one completion against one ``solution`` (JSON list of GT items)."""
    config = (config or RewardConfig()).for_frame(width, height)
    gt = gt_items(solution)
    if gt is None:
        return 0.0
    pred = raw_boxes_points(text, config.max_items)
    if pred is None:
        return 0.0
    result = match_items(
        pred[0],
        pred[1],
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
    at 120. Thresholds come from ``RewardConfig``; the 10 / 30 px thresholds scale with sqrt(W·H) / 840
    of the ``frame_size`` (W, H) column, default 840x840 (``RewardConfig.for_frame``: at 224x224
    they are 2.67 / 8 px).

    The answer is judged RAW, as VisionReasoner does: the first ``<answer>…</answer>`` block must be
    ``json.loads``-able (no code fences, no single quotes), a non-empty list whose items all have
    ``bbox_2d`` (4 numbers) and ``point_2d`` (2 numbers), else the reward is 0. Boxes are neither
    reordered nor clipped: a reversed box ``[x2, y2, x1, y1]`` has no overlap with anything and
    contains no point, and a box or point past the frame border is compared where it was written.
    Text outside the block does not matter (``think_format`` judges it).

    Worked example (GT ``[{"bbox_2d": [10, 10, 109, 109], "point_2d": [60, 60]}]``)::

        exact box and point                                   -> 3.0
        box shifted by 12 px in x: IoU = 88·100/(2·10000 − 8800) = 0.786 > 0.5 but
          mean |Δ| = 12 ≥ 10; point [70, 60] at distance 10 inside the box  -> 2.0
        right answer plus one spurious item: 3 / max(2, 1)     -> 1.5
        the exact box written reversed, [109, 109, 10, 10]    -> 0.0
        box [-20, 10, 109, 109] (20 px left of the frame): IoU 100/130 = 0.77, mean |Δ| = 7.5,
          point [60, 60] inside                               -> 3.0
        box [-60, 10, 109, 109]: IoU 100/170 = 0.59, mean |Δ| = 17.5, point inside
          (clipped to the frame it would score 3)             -> 2.0
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
