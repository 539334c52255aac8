"""VideoSeg-R1 reward functions in TRL's contract, plus the difficulty-aware length penalty.

Each component is its own function ``fn(completions, solution=..., **columns) -> list[float]``
(completions as strings or TRL conversational messages; garbage scores 0 and nothing raises):

=================  =====  ===========================================================
``think_format``   0/1    whole completion is ``<think>…</think>\\s*<answer>…</answer>``
``answer_format``  0..2   per item: 4-number ``bbox_2d`` +1, 2-number ``point_2d`` +1
``accuracy``       0..3   Hungarian-matched IoU / box-L1 / point criteria, / max(K, N)
``non_repeat``     0/1    0 when two or more '.'-sentences repeat
``negative_point`` 0..1   negative points with 0 < L1 distance to the GT masks <= 40 px
=================  =====  ===========================================================

All of them judge the RAW completion as VisionReasoner's rewards do (SPEC §5): the answer is read
with ``json.loads`` and boxes are neither reordered nor clipped (a box written [199, 199, 100, 100]
earns no accuracy); the tolerant parser of SPEC §1 serves inference only.

The soft length penalty multiplies their SUM (it is not a sixth addend): see
``videoseg_r1.rewards.length``. For ``GRPOTrainer`` use :func:`trl_reward_setup`, which returns the
penalised total ``videoseg_total`` with weight 1 (the only thing the advantage sees) and every
component plus ``length_scale`` with weight 0 (logged per step, no effect on the loss).

Used by ``videoseg_r1.training.grpo``; ``solution`` and the other columns come from
``videoseg_r1.training.samples``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from videoseg_r1.config import RewardConfig
from videoseg_r1.rewards.accuracy import accuracy
from videoseg_r1.rewards.format import answer_format, think_format
from videoseg_r1.rewards.length import (
    LENGTH_SCALE_NAME,
    TOTAL_REWARD_NAME,
    count_think_tokens,
    difficulty_level,
    length_budget,
    length_scale,
    make_length_scale_reward,
    make_total_reward,
)
from videoseg_r1.rewards.negative_point import negative_point
from videoseg_r1.rewards.non_repeat import non_repeat

RewardFunc = Callable[..., list[float]]

#: The five component rewards with default thresholds (``RewardConfig()``), by name.
REWARD_FUNCS: dict[str, RewardFunc] = {
    "think_format": think_format,
    "answer_format": answer_format,
    "accuracy": accuracy,
    "non_repeat": non_repeat,
    "negative_point": negative_point,
}

_CONFIGURABLE = {"accuracy", "negative_point"}


def make_reward_funcs(reward_config: RewardConfig | None = None) -> dict[str, RewardFunc]:
    """The components of ``REWARD_FUNCS`` with thresholds bound from ``reward_config``.

    Each returned function keeps its name (``__name__``), which is the key TRL logs it under.
    """
    if reward_config is None:
        return dict(REWARD_FUNCS)
    out: dict[str, RewardFunc] = {}
    for name, fn in REWARD_FUNCS.items():
        if name in _CONFIGURABLE:
            bound = functools.partial(fn, reward_config=reward_config)
            functools.update_wrapper(bound, fn)
            out[name] = bound
        else:
            out[name] = fn
    return out


def total_reward(
    completions: list[Any],
    solution: list[Any] | None = None,
    difficulty: list[Any] | None = None,
    *,
    reward_config: RewardConfig | None = None,
    tokenizer: Any | None = None,
    **columns: Any,
) -> list[float]:
    """(Σ component rewards) × length-penalty scale s, per completion (max 8.0).

    Worked example: a perfect answer (8.0 before the penalty) on an easy sample (D = 2, budget 32)
    with 52 reasoning tokens gets s = 1 − 0.01·20 = 0.8 and a total of 6.4.
    """
    fn = make_total_reward(make_reward_funcs(reward_config), reward_config, tokenizer)
    return fn(completions, solution=solution, difficulty=difficulty, **columns)


def trl_reward_setup(
    reward_config: RewardConfig | None = None, tokenizer: Any | None = None
) -> tuple[list[RewardFunc], list[float]]:
    """``(reward_funcs, reward_weights)`` for ``GRPOTrainer`` / ``GRPOConfig.reward_weights``.

    ``[videoseg_total, think_format, answer_format, accuracy, non_repeat, negative_point,
    length_scale]`` with weights ``[1, 0, 0, 0, 0, 0, 0]``: the advantage is computed from the
    penalised total only, and TRL logs every entry separately. Requires TRL's default
    ``multi_objective_aggregation="sum_then_normalize"``.
    """
    components = make_reward_funcs(reward_config)
    funcs: list[RewardFunc] = [make_total_reward(components, reward_config, tokenizer)]
    funcs += list(components.values())
    funcs.append(make_length_scale_reward(reward_config, tokenizer))
    weights = [1.0] + [0.0] * (len(funcs) - 1)
    return funcs, weights


__all__ = [
    "REWARD_FUNCS",
    "TOTAL_REWARD_NAME",
    "LENGTH_SCALE_NAME",
    "accuracy",
    "answer_format",
    "count_think_tokens",
    "difficulty_level",
    "length_budget",
    "length_scale",
    "make_reward_funcs",
    "make_total_reward",
    "negative_point",
    "non_repeat",
    "think_format",
    "total_reward",
    "trl_reward_setup",
]
