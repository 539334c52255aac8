"""Format rewards: is the completion ``<think>…</think><answer>JSON</answer>`` and is the JSON usable?

Both judge the RAW completion strictly, as VisionReasoner does (SPEC §5): plain ``json.loads`` of the
answer block, no code fences, no text outside the tags. Numbers must be finite JSON numbers, the same
rule THE parser (``videoseg_r1.reasoning.parsing``) applies. Registered in ``REWARD_FUNCS``.
"""

from __future__ import annotations

from typing import Any

from videoseg_r1.rewards.common import completion_text, is_number_list, strict_answer_json, strict_format_ok


def think_format_score(text: str) -> float:
    """1.0 if ``text`` is exactly ``<think>…</think>\\s*<answer>…</answer>`` (whitespace around allowed)."""
    return 1.0 if strict_format_ok(text) else 0.0


def think_format(completions: list[Any], solution: list[Any] | None = None, **columns: Any) -> list[float]:
    """Think-format reward (0/1): the whole completion is ``<think>…</think>\\s*<answer>…</answer>``.

    Nothing may stand before ``<think>`` or after ``</answer>`` except whitespace; each of the four
    tags appears exactly once (``split_think_answer(text).strict_format`` of THE parser).

    Worked example::

        >>> think_format(["<think>the dog on the left</think>\\n<answer>[]</answer>",
        ...               "Sure! <think>x</think><answer>[]</answer>",
        ...               "<think>x</think><answer>[]</answer> trailing"])
        [1.0, 0.0, 0.0]
    """
    out = []
    for completion in completions:
        try:
            out.append(think_format_score(completion_text(completion)))
        except Exception:  # a reward never raises
            out.append(0.0)
    return out


def answer_format_score(text: str) -> float:
    """0..2: per item +1 for a 4-number ``bbox_2d`` and +1 for a 2-number ``point_2d``, averaged."""
    data = strict_answer_json(text)
    if not isinstance(data, list) or not data:
        return 0.0
    total = 0.0
    for item in data:
        if not isinstance(item, dict):
            continue
        total += float(is_number_list(item.get("bbox_2d"), 4)) + float(is_number_list(item.get("point_2d"), 2))
    return total / len(data)


def answer_format(completions: list[Any], solution: list[Any] | None = None, **columns: Any) -> list[float]:
    """Answer-format reward (0..2): the ``<answer>`` block is a JSON list of well-formed items.

    For each item +1 if ``bbox_2d`` is a list of 4 finite numbers and +1 if ``point_2d`` is a list of
    2 finite numbers; the sum is divided by the number of items. 0 if there is not exactly one answer
    block, if its content is not valid JSON (``json.loads``), or if it is not a non-empty list.
    ``neg_point_2d`` is optional and not scored here.

    Worked example::

        >>> answer_format([
        ...     '<think>.</think><answer>[{"bbox_2d": [1, 2, 30, 40], "point_2d": [10, 20]}]</answer>',
        ...     '<answer>[{"bbox_2d": [1, 2, 30, 40], "point_2d": [10, 20]}, {"bbox_2d": [1, 2]}]</answer>',
        ...     "<answer>[{'bbox_2d': [1, 2, 30, 40]}]</answer>",   # single quotes: not JSON
        ... ])
        [2.0, 1.0, 0.0]

    The second completion has items scoring 2 and 0, so (2 + 0) / 2 = 1.0.
    """
    out = []
    for completion in completions:
        try:
            out.append(answer_format_score(completion_text(completion)))
        except Exception:
            out.append(0.0)
    return out
