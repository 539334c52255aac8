"""Helpers shared by the reward functions: completion text, strict tag/JSON checks, GT columns.

Used only inside ``videoseg_r1.rewards``. Two kinds of reading live here on purpose:

* *strict* reading (:func:`strict_format_ok`, :func:`strict_answer_json`, :func:`is_number_list`) for the format rewards,
  which judge the raw completion as VisionReasoner does (valid JSON inside the tags, nothing else);
* *tolerant* reading (:func:`predicted_items`) for the accuracy and negative-point rewards, which
  goes through THE answer parser ``videoseg_r1.reasoning.parsing`` so that training scores exactly
  what inference would use.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------- tolerant reading


@dataclass
class PredItem:
    """One predicted target as the parser read it; missing parts are None."""

    box_xyxy: tuple[float, float, float, float] | None
    point_xy: tuple[float, float] | None
    neg_point_xy: tuple[float, float] | None


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


def _xy(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        return None
    return out


def predicted_items(text: str, width: int, height: int, max_items: int | None = None) -> list[PredItem]:
    """Items of the answer read by THE parser (``videoseg_r1.reasoning.parsing.parse_answer``).

    Boxes are reordered and clipped to the ``width`` x ``height`` frame, points clipped; an item the
    parser could not read keeps None in that field. [] when no JSON is found.
    """
    from videoseg_r1.reasoning.parsing import parse_answer

    try:
        parsed = parse_answer(text, frame_size_wh=(width, height), max_objects=max_items)
    except Exception:  # the parser never raises by contract; a reward must not either
        return []
    return [PredItem(_xy(o.box_xyxy, 4), _xy(o.point_xy, 2), _xy(o.neg_point_xy, 2)) for o in parsed.objects]


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
