"""Non-repeat reward: punishes reasoning that loops on the same sentence (VisionReasoner's rule).

Registered in ``REWARD_FUNCS``; a pure function of the completion text.
"""

from __future__ import annotations

from typing import Any

from videoseg_r1.rewards.common import completion_text

#: Number of repeated sentences at which the reward drops to 0 (VisionReasoner: 2).
MAX_REPEATS = 2


def non_repeat_score(text: str, max_repeats: int = MAX_REPEATS) -> float:
    """1.0 unless at least ``max_repeats`` sentences (split on '.') repeat an earlier sentence."""
    seen: set[str] = set()
    repeats = 0
    for sentence in text.split("."):
        sentence = sentence.strip()
        if not sentence:
            continue
        if sentence in seen:
            repeats += 1
            if repeats >= max_repeats:
                return 0.0
        seen.add(sentence)
    return 1.0


def non_repeat(completions: list[Any], solution: list[Any] | None = None, **columns: Any) -> list[float]:
    """Non-repeat reward (0/1): split the completion on '.', 0 if two or more sentences repeat.

    Sentences are stripped of surrounding whitespace and empty ones ignored; every occurrence of a
    sentence already seen counts as one repeat, and two repeats give 0 (one repeat is tolerated, as in
    VisionReasoner).

    Worked example::

        >>> non_repeat(["A cat. A dog. A cat.",          # 1 repeat
        ...             "A cat. A cat. A cat.",          # 2 repeats
        ...             "A cat. A dog. A cat. A dog."])  # 2 repeats
        [1.0, 0.0, 0.0]

    The whole completion is split, tags included: in ``"<think>A cat. A cat."`` the first sentence
    is ``"<think>A cat"``, which differs from ``"A cat"``.
    """
    out = []
    for completion in completions:
        try:
            out.append(non_repeat_score(completion_text(completion)))
        except Exception:
            out.append(0.0)
    return out
