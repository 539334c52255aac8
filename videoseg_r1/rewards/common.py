"""Helpers shared by the reward functions: completion text, strict tag/JSON checks, GT columns.

Used only inside ``videoseg_r1.rewards``. Every reward judges the RAW completion, as VisionReasoner
does (SPEC §5); the tolerant reading of THE parser (code fences, single quotes, boxes reordered and
clipped to the frame) serves inference only. Two strict readings live here:

* the format rewards' (:func:`strict_format_ok`, :func:`strict_answer_json`, :func:`is_number_list`):
  exactly one closed answer block, plain ``json.loads``, finite numbers;
* the accuracy and negative-point rewards' (:func:`answer_json`, :func:`raw_boxes_points`,
  :func:`raw_negative_points`): VisionReasoner's reading of the answer (the first
  ``<answer>…</answer>`` block, ``json.loads``, every item's ``bbox_2d`` / ``point_2d`` taken as
  written: a box [199, 199, 100, 100] stays reversed and a box past the border stays there).
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from videoseg_r1.config import MODEL_INPUT_SIZE

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or TRL conversational messages.

    Conversational completions are ``[{"role": "assistant", "content": str | [parts]}]``; text parts
    ``{"type": "text", "text": ...}`` are concatenated. Anything else yields "" (scores 0).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return ""
    pieces: list[str] = []
    for message in completion:
        if not isinstance(message, dict):
            continue
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            for part in content:
                if isinstance(part, dict) and part.get("type", "text") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        pieces.append(text)
    return "".join(pieces)


def strict_format_ok(text: str) -> bool:
    """The parser's strict check: the whole text is one ``<think>…</think>`` then one ``<answer>…</answer>``."""
    from videoseg_r1.reasoning.parsing import split_think_answer

    return bool(split_think_answer(text).strict_format)


def answer_block(text: str) -> str | None:
    """Content of the single, closed ``<answer>…</answer>`` block, or None if absent or repeated."""
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    start = text.index(ANSWER_OPEN) + len(ANSWER_OPEN)
    end = text.index(ANSWER_CLOSE)
    if end < start:
        return None
    return text[start:end]


def strict_answer_json(text: str) -> Any | None:
    """The answer block read by the parser's strict loader (plain ``json.loads``), else None.

    No code fences, single quotes or trailing commas: those are the tolerant path of inference.
    """
    from videoseg_r1.reasoning.parsing import load_answer_json_strict

    block = answer_block(text)
    if block is None:
        return None
    value, error = load_answer_json_strict(block.strip())
    return None if error else value


def is_number_list(value: Any, length: int) -> bool:
    """Exactly ``length`` finite real numbers (booleans and strings are not) — the parser's rule."""
    from videoseg_r1.reasoning.parsing import parse_box, parse_point

    if length == 4:
        return parse_box(value, None)[0] is not None
    if length == 2:
        return parse_point(value, None)[0] is not None
    raise ValueError(f"no parser rule for {length} numbers")


def think_text(text: str) -> str:
    """The reasoning inside ``<think>`` as the parser reads it (to ``</think>`` or to the end).

    No ``<think>`` at all -> "" (nothing to count). Used by the length penalty.
    """
    from videoseg_r1.reasoning.parsing import split_think_answer

    return split_think_answer(text).think or ""


# ----------------------------------------------------------------------------- raw reading (accuracy, negative point)


def frame_size_of(columns: dict[str, Any], index: int) -> tuple[int, int]:
    """(width, height) of the model-input frame of sample ``index`` (``frame_size`` column or default)."""
    sizes = columns.get("frame_size")
    if sizes is not None:
        try:
            w, h = sizes[index]
            return int(w), int(h)
        except (TypeError, ValueError, IndexError):
            pass
    return MODEL_INPUT_SIZE, MODEL_INPUT_SIZE


def answer_json(text: str) -> Any | None:
    """The JSON value of the first ``<answer>…</answer>`` block, or None (VisionReasoner's reading).

    The block runs from the first ``<answer>`` to the first ``</answer>`` after it (the non-greedy
    ``<answer>\\s*(.*?)\\s*</answer>`` search of VisionReasoner's reward); its stripped content must
    be valid JSON for ``json.loads`` (which, like VisionReasoner's, accepts ``NaN`` / ``Infinity``).
    Text outside the block, a second block or a missing ``<think>`` do not matter here: the
    format rewards judge those.

    >>> answer_json('Sure. <answer> [1, 2] </answer><answer>[3]</answer>')
    [1, 2]
    >>> answer_json("<answer>[{'bbox_2d': [1, 2, 3, 4]}]</answer>") is None   # single quotes
    True
    """
    from videoseg_r1.reasoning.parsing import load_answer_json_strict

    start = text.find(ANSWER_OPEN)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    value, error = load_answer_json_strict(text[start:end].strip())
    return None if error else value


def _json_numbers(value: Any, length: int) -> tuple[float, ...] | None:
    """``value`` as ``length`` floats if it is a list of exactly ``length`` JSON numbers, else None.

    Non-finite numbers (``NaN``, ``Infinity``) are kept: they fail every comparison of the accuracy
    criteria, as in VisionReasoner's NumPy arithmetic. Booleans, strings and nulls are not numbers.
    """
    if not isinstance(value, list) or len(value) != length:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        return tuple(float(v) for v in value)
    except OverflowError:  # an integer beyond float range
        return None


def raw_boxes_points(text: str, max_items: int | None = None) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]] | None:
    """Predicted boxes (K, 4) and points (K, 2) exactly as written, or None when the answer is unusable.

    VisionReasoner's accuracy reward reads ``[item["bbox_2d"] for item in data]`` and
    ``[item["point_2d"] ...]`` and scores 0 whenever that fails; likewise here the answer is unusable
    (None -> accuracy 0) unless :func:`answer_json` is a non-empty list of objects that EACH have
    a ``bbox_2d`` and a ``point_2d`` key, and the first ``max_items`` items have 4 and 2 numbers
    there. No reordering, no clipping: a reversed box keeps its (empty) extent, a point left of the
    frame keeps its negative x.

    >>> raw_boxes_points('<answer>[{"bbox_2d": [199, 199, 100, 100], "point_2d": [-5, 150]}]</answer>')
    ([(199.0, 199.0, 100.0, 100.0)], [(-5.0, 150.0)])
    >>> raw_boxes_points('<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>') is None   # no point_2d
    True
    """
    data = answer_json(text)
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(item, dict) and "bbox_2d" in item and "point_2d" in item for item in data):
        return None
    boxes, points = [], []
    for item in data[:max_items]:
        box = _json_numbers(item["bbox_2d"], 4)
        point = _json_numbers(item["point_2d"], 2)
        if box is None or point is None:
            return None
        boxes.append(box)
        points.append(point)
    return boxes, points


def raw_negative_points(text: str, max_items: int | None = None) -> list[tuple[float, float]]:
    """The ``neg_point_2d`` of each of the first ``max_items`` answer items, as written (not clipped).

    Items that are not objects, or whose ``neg_point_2d`` is absent or not 2 finite numbers, give
    no negative point. [] when the answer is not a JSON list (:func:`answer_json`).
    """
    data = answer_json(text)
    if not isinstance(data, list):
        return []
    out = []
    for item in data[:max_items]:
        point = _json_numbers(item.get("neg_point_2d"), 2) if isinstance(item, dict) else None
        if point is not None and all(math.isfinite(v) for v in point):
            out.append((point[0], point[1]))
    return out


def gt_items(solution: Any) -> tuple[list[list[float]], list[list[float]]] | None:
    """Ground-truth boxes and points from a ``solution`` JSON string (or already-decoded list)."""
    try:
        data = json.loads(solution) if isinstance(solution, str) else solution
        boxes = [[float(v) for v in item["bbox_2d"]] for item in data]
        points = [[float(v) for v in item["point_2d"]] for item in data]
    except (TypeError, ValueError, KeyError):
        return None
    if any(len(b) != 4 for b in boxes) or any(len(p) != 2 for p in points):
        return None
    return boxes, points


def column(columns: dict[str, Any], name: str, n: int) -> Sequence[Any]:
    """Column ``name`` of the batch (one value per completion), or ``[None] * n`` when absent."""
    values = columns.get(name)
    if values is None:
        return [None] * n
    return values
